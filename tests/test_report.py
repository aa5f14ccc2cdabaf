"""Reports: one table per world, numeric order, bootstrap intervals and paired differences checked by hand,
no bold within noise, FID/KID with N and spread, the small-N warning, and sweep.py's command line."""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from harness import report

from core.files import REPO_ROOT as ROOT

WORLDS = {
    "gmm": dict(dataset="gmm", split="test", dataset_start=0, image_ids="0..3", n_images=4, model="gmm",
                model_params=json.dumps({"model": "gmm", "rank": 32}), task="inpaint_box",
                task_params=json.dumps({"box": 8}), noise="gaussian", sigma_y=0.05),
    "digits": dict(dataset="digits", split="test", dataset_start=0, image_ids="0..3", n_images=4, model="digits",
                   model_params=json.dumps({"model": "digits", "weights_sha": "abc", "path": "/somewhere"}),
                   task="inpaint_box", task_params=json.dumps({"box": 8}), noise="gaussian", sigma_y=0.05),
}


def make_run(root, name, solver, values, world="gmm", seed=0, params=None, nfe=10.0, ids=None, extra=None,
             metric="psnr"):
    """A finished run folder: summary.csv (means) and images.csv (per image) as run_cell writes them."""
    ids = ids or [str(i) for i in range(len(values))]
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    rows = pd.DataFrame({"image_id": ids, "status": "ok", metric: values, "nfe": nfe, "vjp": nfe,
                         "sec_per_sample": nfe / 100})
    rows.to_csv(os.path.join(folder, "images.csv"), index=False)
    summary = {"run": name, "solver": solver, "solver_params": json.dumps(params or {"steps": int(nfe)}, sort_keys=True),
               **WORLDS[world], "seed": seed, "num_samples": 1, metric: float(np.mean(values)),
               f"{metric}_std_images": float(np.std(values, ddof=1)), "nfe": nfe, "vjp": nfe,
               "sec_per_sample": nfe / 100, **(extra or {})}
    pd.DataFrame([summary]).to_csv(os.path.join(folder, "summary.csv"), index=False)
    return folder


def test_two_worlds_give_two_tables_and_never_one_averaged_cell(tmp_path):
    make_run(tmp_path, "a", "dps", [10.0, 10.0, 10.0, 10.0], world="gmm")
    make_run(tmp_path, "b", "dps", [20.0, 20.0, 20.0, 20.0], world="digits")
    df, worlds = report.build(str(tmp_path), ["psnr"], n_resamples=200)
    assert len(worlds) == 2
    means = sorted(t["cells"][("dps", "psnr")]["mean"] for _, t, _, _ in worlds)
    assert means == [10.0, 20.0]  # never 15
    text = report.markdown(worlds, str(tmp_path))
    assert text.count("### ") == 2 and "| dps | 10 " in text and "| dps | 20 " in text and "| dps | 15" not in text


def test_seed_sets_are_part_of_the_world_and_several_seeds_show_their_spread(tmp_path):
    make_run(tmp_path, "a0", "dps", [10.0, 11, 12, 13], seed=0)
    make_run(tmp_path, "b1", "ddim", [5.0, 6, 7, 8], seed=1)  # another seed: another world
    _, worlds = report.build(str(tmp_path), ["psnr"], n_resamples=200)
    assert len(worlds) == 2 and all(len(t["rows"]) == 1 for _, t, _, _ in worlds)
    # two seeds of every solver: one world, per-image means over seeds, the spread over seeds shown
    for s, shift in ((0, 0.0), (1, 2.0)):
        make_run(tmp_path / "two", f"dps{s}", "dps", [10.0 + shift, 11 + shift, 12 + shift, 13 + shift], seed=s)
        make_run(tmp_path / "two", f"ddim{s}", "ddim", [5.0 + shift, 6 + shift, 7 + shift, 8 + shift], seed=s)
    _, worlds = report.build(str(tmp_path / "two"), ["psnr"], n_resamples=200)
    assert len(worlds) == 1
    t = worlds[0][1]
    c = t["cells"][("dps", "psnr")]
    assert c["mean"] == pytest.approx(12.5) and c["seed_sd"] == pytest.approx(np.std([11.5, 13.5], ddof=1))
    assert "(seeds)" in report.markdown(worlds, "x")


def test_same_label_twice_in_a_world_is_not_averaged(tmp_path):
    make_run(tmp_path, "r1", "dps", [10.0] * 4)
    make_run(tmp_path, "r2", "dps", [12.0] * 4)
    _, worlds = report.build(str(tmp_path), ["psnr"], n_resamples=200)
    assert worlds[0][1]["rows"] == ["dps [r1]", "dps [r2]"]


def test_rows_sort_numeric_parameters_as_numbers(tmp_path):
    for steps in (100, 20, 5):
        make_run(tmp_path, f"dps{steps}", "dps", [10.0 + steps / 100] * 4, nfe=float(steps))
    _, worlds = report.build(str(tmp_path), ["psnr"], n_resamples=200)
    assert worlds[0][1]["rows"] == ["dps steps=5", "dps steps=20", "dps steps=100"]


def _exact_percentiles(v, level=0.95):
    """The percentile-bootstrap interval by hand: every one of the n^n resamples, equally likely."""
    means = np.sort([np.mean(c) for c in itertools.product(v, repeat=len(v))])
    return np.quantile(means, (1 - level) / 2), np.quantile(means, 1 - (1 - level) / 2)


def test_bootstrap_interval_and_paired_difference_match_a_hand_computation(tmp_path):
    a = [20.0, 22.0, 25.0, 21.0, 30.0]
    b = [19.0, 21.5, 23.0, 21.0, 26.0]
    make_run(tmp_path, "ra", "dps", a, ids=["3", "1", "4", "0", "2"])
    # the reference's rows come in another order: pairs are matched by image id, never by position
    order = [3, 1, 4, 0, 2]
    make_run(tmp_path, "rb", "ddrm", [b[order.index(i)] for i in range(5)], ids=[str(i) for i in range(5)])
    b_by_id = dict(zip(["3", "1", "4", "0", "2"], b))
    _, worlds = report.build(str(tmp_path), ["psnr"], reference="ddrm", n_resamples=40000)
    t = worlds[0][1]
    c = t["cells"][("dps", "psnr")]
    lo, hi = _exact_percentiles(a)
    step = (max(a) - min(a)) / len(a)  # one atom of the discrete bootstrap distribution
    assert c["mean"] == pytest.approx(np.mean(a)) and abs(c["lo"] - lo) < step and abs(c["hi"] - hi) < step
    d = [x - b_by_id[i] for x, i in zip(a, ["3", "1", "4", "0", "2"])]  # 1, .5, 2, 0, 4
    dlo, dhi = _exact_percentiles(d)
    mean, lo2, hi2, n = c["diff"]
    assert n == 5 and mean == pytest.approx(np.mean(d)) and abs(lo2 - dlo) < 0.5 and abs(hi2 - dhi) < 0.5
    assert lo2 > 0  # every difference >= 0, one of them 0: significant
    text = report.markdown(worlds, "x")
    assert f"{np.mean(d):+.3g} [" in text and "]*" in text and "ref." in text


def test_best_is_bold_only_beyond_the_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.normal(20, 3, 12)
    make_run(tmp_path / "close", "dps", "dps", base + rng.normal(0.05, 1.0, 12), ids=[str(i) for i in range(12)])
    make_run(tmp_path / "close", "ddrm", "ddrm", base, ids=[str(i) for i in range(12)])
    _, worlds = report.build(str(tmp_path / "close"), ["psnr"], n_resamples=1000)
    assert not any(c.get("bold") for c in worlds[0][1]["cells"].values())
    assert "**" not in report.markdown(worlds, "x")
    make_run(tmp_path / "far", "dps", "dps", base + 3 + rng.normal(0, 0.2, 12), ids=[str(i) for i in range(12)])
    make_run(tmp_path / "far", "ddrm", "ddrm", base, ids=[str(i) for i in range(12)])
    _, worlds = report.build(str(tmp_path / "far"), ["psnr"], n_resamples=1000)
    assert worlds[0][1]["cells"][("dps", "psnr")].get("bold") and "| **" in report.markdown(worlds, "x")


def _set_extra(fid, fid_std, kid, n=16, dim=128):
    return {"fid": fid, "fid_std": fid_std, "kid": kid, "kid_std": 0.0, "kid_jack_std": 0.002, "fid_n": n,
            "fid_ref_n": n, "fid_dim": dim, "fid_features": "models.digits_classifier:standardised_features",
            "fid_mode": "clean", "fid_reference": "truths:x"}


def test_fid_kid_carry_n_and_spread_warn_on_small_n_and_are_not_bold_within_noise(tmp_path):
    make_run(tmp_path, "a", "dps", [20.0] * 4, world="digits", extra=_set_extra(30.0, 5.0, 0.012))
    make_run(tmp_path, "b", "ddrm", [21.0] * 4, world="digits", extra=_set_extra(33.0, 5.0, 0.010))
    _, worlds = report.build(str(tmp_path), ["fid", "kid"], n_resamples=200)
    text = report.markdown(worlds, "x")
    assert "| kid×10³ ↓ |" in text or "kid×10³ ↓" in text
    assert "30 ± 5 (N=16/16) ⚠" in text and "12 ± 2 (N=16/16) ⚠" in text  # KID ×10³, its spread, N/ref N
    assert "⚠ fid, kid from N=16 images (reference N=16) < feature dimension 128" in text
    assert "**" not in text  # 30 ± 5 vs 33 ± 5: within noise
    # far apart beyond both spreads: bold; N above the dimension: no warning
    make_run(tmp_path / "far", "a", "dps", [20.0] * 4, world="digits", extra=_set_extra(30.0, 1.0, 0.012, 200))
    make_run(tmp_path / "far", "b", "ddrm", [21.0] * 4, world="digits", extra=_set_extra(60.0, 1.0, 0.010, 200))
    _, worlds = report.build(str(tmp_path / "far"), ["fid"], n_resamples=200)
    text = report.markdown(worlds, "x")
    assert "**30 ± 1 (N=200/200)**" in text and "⚠" not in text


def test_fid_spreads_and_feature_dimension_in_set_metrics():
    from metrics import fid

    g = np.random.default_rng(0)
    x, y = g.normal(size=(20, 5)), g.normal(size=(30, 5)) + 0.3
    mu, sigma = fid.stats(y)
    out = fid.set_metrics(x, {"mu": mu, "sigma": sigma, "feats": y}, ["fid", "kid"])
    assert out["fid_dim"] == 5 and out["fid_std"] > 0 and out["kid_std"] == 0.0 and out["kid_jack_std"] > 0
    # the bootstrap's low-rank FID equals the full formula on one resample (here: the sample itself)
    xc = x - x.mean(0)
    a = xc @ fid._psd_sqrt(sigma)
    d = x.mean(0) - mu
    low = d @ d + (xc ** 2).sum() / 19 + np.trace(sigma) - 2 * np.sqrt(np.linalg.eigvalsh(a @ a.T / 19).clip(0)).sum()
    assert low == pytest.approx(out["fid"], rel=1e-6)


def test_digits_standardised_features_have_unit_scale_on_train():
    from data.digits import digits_tensors
    from models import digits_classifier as dc

    x, _ = digits_tensors("train")
    f = dc.standardised_features(x)
    live = dc.train_feature_stats()[1] != 1
    assert f.shape[1] == 128 and f.mean(0).abs().max() < 1e-4 and torch.allclose(f.std(0)[live], torch.ones(int(live.sum())), atol=1e-4)


def test_pareto_front():
    assert report.pareto([(1, 10), (2, 12), (3, 11), (4, 15)], higher=True) == [0, 1, 3]
    assert report.pareto([(1, 0.5), (2, 0.6), (3, 0.2)], higher=False) == [0, 2]


def test_markdown_table_escapes_pipes():
    assert report.markdown_table(["a", "b"], [["x|y", 1]]) == "| a | b |\n|---|---|\n| x\\|y | 1 |\n"


def _grid_pt(folder, value):
    torch.save({"measurement": torch.zeros(3, 1, 16, 16), "recon": torch.full((3, 1, 16, 16), value),
                "truth": torch.ones(3, 1, 16, 16)}, os.path.join(folder, "grid.pt"))


def make_report(tmp_path):
    """A two-world report with plots, grids and reference: what the browser test opens."""
    for steps in (20, 100):
        _grid_pt(make_run(tmp_path / "runs", f"dps{steps}", "dps", list(np.linspace(18, 22, 6) + steps / 50),
                          nfe=float(steps), ids=[str(i) for i in range(6)]), 0.5)
        _grid_pt(make_run(tmp_path / "runs", f"ddrm{steps}", "ddrm", list(np.linspace(15, 19, 6) + steps / 100),
                          nfe=float(steps), ids=[str(i) for i in range(6)]), -0.5)
    make_run(tmp_path / "runs", "dig", "dps", [25.0, 26.0, 27.0], world="digits")
    out = tmp_path / "report"
    report.write_report(str(tmp_path / "runs"), str(out), ["psnr"], reference="ddrm", n_resamples=200)
    return out


def test_write_report_files(tmp_path):
    out = make_report(tmp_path)
    for f in ("table.md", "table.tex", "leaderboard.csv", "index.html", "world0_grid.png", "world0_psnr_vs_nfe.png"):
        assert (out / f).stat().st_size > 100, f
    page = (out / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and page.count("<table") == 2
    from PIL import Image

    im = Image.open(out / "world0_grid.png")  # 4 rows (measurement, 2 solvers... ) of 3 16-px images ×4 + labels
    assert im.size[1] < 400 and im.size[0] < 1000
    tex = (out / "table.tex").read_text()
    assert tex.count("\\begin{tabular}") == 2


def test_labelled_grid_size_is_sensible(tmp_path):
    from harness.grid import save_grid
    from PIL import Image

    x = torch.zeros(8, 3, 256, 256)
    save_grid(str(tmp_path / "g.png"), x, x, x)
    w, h = Image.open(tmp_path / "g.png").size
    assert h < 800 and w < 2300  # not upsampled ×4 (was 8210×3080)
    assert set(torch.load(tmp_path / "g.pt", weights_only=True)) == {"measurement", "recon", "truth"}


def _chromium():
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return None


def test_html_report_in_a_real_browser(tmp_path):
    """Headless Chromium (Debian's package) through Playwright, offline: tables, rows, sorting, images."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    out = make_report(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        context = browser.new_context(offline=True)
        page = context.new_page()
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        assert all(u.startswith(("file:", "data:")) for u in requests), requests
        tables = page.query_selector_all("table.results")
        assert len(tables) == 2
        counts = sorted(len(t.query_selector_all("tbody tr")) for t in tables)
        assert counts == [1, 4]
        big = [t for t in tables if len(t.query_selector_all("tbody tr")) == 4][0]
        col = lambda: [r.query_selector_all("td")[1].get_attribute("data-v") for r in big.query_selector_all("tbody tr")]  # noqa: E731
        big.query_selector_all("th")[1].click()
        asc = [float(v) for v in col()]
        assert asc == sorted(asc)
        big.query_selector_all("th")[1].click()
        desc = [float(v) for v in col()]
        assert desc == sorted(desc, reverse=True)
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
        assert len(widths) >= 3 and all(w > 0 for w in widths)
        browser.close()


def _sweep(args, tmp_path, timeout=900):
    base = ["+experiment=gmm", "task=inpaint_box", "dataset.n=2", "run.num_samples=2", "metrics.n_ref=32",
            f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache",
            "run.progress=false", f"hydra.sweep.dir={tmp_path}/sweeps"]
    return subprocess.run([sys.executable, "sweep.py", *base, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_sweep_report_with_a_command_line_grid_both_spellings(tmp_path):
    p = _sweep(["solver=dps,ddim", "task=inpaint_box,sr4", "solver.steps=3", f"--report={tmp_path}/a",
                "--metrics=psnr,sw2", "--reference", "ddim"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    text = (tmp_path / "a" / "table.md").read_text()
    assert text.count("### ") == 2 and "Δpsnr vs ddim" in text and (tmp_path / "a" / "index.html").exists()
    p = _sweep(["solver=dps", "solver.steps=3", "--report", f"{tmp_path}/b"], tmp_path)  # resumes: nothing recomputed
    assert p.returncode == 0, p.stderr[-3000:]
    assert "| dps |" in (tmp_path / "b" / "table.md").read_text()


def test_sweep_mixed_budget_grid_runs_what_can_run_and_exits_2(tmp_path):
    p = _sweep(["solver=dps,pinv", "solver.steps=3", f"--report={tmp_path}/r"], tmp_path)
    assert p.returncode == 2  # the pinv cell was refused as bad input (a crash would be 1)
    assert "solver PseudoInverse has no parameter steps" in p.stderr
    assert "1 cell(s) of the sweep did not run" in p.stderr
    assert "| dps |" in (tmp_path / "r" / "table.md").read_text()


def test_sweep_refuses_unknown_options_in_one_sentence():
    p = subprocess.run([sys.executable, "sweep.py", "--reprot=x"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: unknown option --reprot=x")
    p = subprocess.run([sys.executable, "sweep.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "--report DIR" in p.stdout


def _wandb_log(d, needle, tries=100):
    import glob
    import time

    for _ in range(tries):  # wandb's service may still be flushing the record log
        log = open(glob.glob(str(d / "*.wandb"))[0], "rb").read()
        if needle in log:
            return log
        time.sleep(0.2)
    return log


def test_wandb_offline_logs_each_batch_a_group_and_a_crashed_cell(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from harness import loggers
    from harness.runner import run_cell

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_RUN_GROUP", "sweep-test")
    fast = ["solver=pinv", "dataset.n=4", "run.num_samples=2", "compute.batch_size=2", "metrics.n_ref=32", "logger=wandb"]
    s = run_cell(make_cfg(*fast))
    d = tmp_path / "wandb" / [r for r in os.listdir(tmp_path / "wandb") if r.endswith(s["run"])][0]
    import glob
    assert len(glob.glob(str(d / "files" / "media" / "table" / "batch_rows_*.table.json"))) == 4  # one per batch
    assert glob.glob(str(d / "files" / "media" / "images" / "reconstructions_*.png"))
    log = _wandb_log(d, b"finished")
    assert b"running/psnr" in log and b"sweep-test" in log and b"finished" in log

    def boom(k):
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        run_cell(make_cfg(*fast, "solver=ddim", "solver.steps=2"), after_batch=boom)
    assert loggers._Live.run is not None  # left open by the crash ...
    loggers._crash_open_run()             # ... finished as crashed by the next cell or at exit
    assert loggers._Live.run is None
    d2 = [r for r in os.listdir(tmp_path / "wandb") if "ddim" in r][0]
    assert b"crashed" in _wandb_log(tmp_path / "wandb" / d2, b"crashed")


@pytest.mark.parametrize("script", sorted(f for f in os.listdir(os.path.join(ROOT, "benchmarks")) if f.endswith(".py")
                                          and not f.startswith("_")))
def test_benchmark_help_only_prints_help(script, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0 and p.stdout.startswith("usage:"), p.stderr[-2000:]
    assert os.listdir(tmp_path) == []  # nothing written


def test_grid_root_composes_sweep_values_and_budget_keys_reach_every_solver():
    import sweep

    # Hydra's compose cannot take `a,b` (the old "Ambiguous value for argument" crash): first choices are composed
    assert sweep.grid_root(["solver=dps,ddrm,diffpir", "task=inpaint_box,sr4", "solver.steps=20,100"]) == "results/runs"
    assert sweep.grid_root(["+experiment=grid_gmm"]) == "results/runs/sweep_gmm"
    assert sweep.grid_overrides(["solver=dps,pinv", "solver.steps=3", "task=sr4"]) == \
        ["solver=dps,pinv", "++solver.steps=3", "task=sr4"]
    assert sweep.grid_overrides(["solver=dps", "solver.steps=3"]) == ["solver=dps", "solver.steps=3"]
    a, rest = sweep.parser().parse_known_args(["--report", "D", "solver=dps", "--metrics=psnr"])
    b, _ = sweep.parser().parse_known_args(["--report=D", "solver=dps"])
    assert a.report == b.report == "D" and rest == ["solver=dps"] and a.metrics == "psnr"
