"""The runner end to end: records, protocol columns, resume, determinism, divergence, bad input."""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from harness.runner import run_cell
from core.errors import ConfigError

from core.files import REPO_ROOT as ROOT
FAST = ["solver.steps=20", "dataset.n=5", "run.num_samples=2", "compute.device=cpu"]
PROTOCOL = ["run", "solver", "solver_params", "task", "task_params", "noise", "sigma_y", "sigma_given", "sigma_space",
            "dataset", "split", "image_id", "model", "model_params", "seed", "git_commit", "measurement_key", "nfe",
            "vjp", "sec_per_sample", "peak_mem_mb", "peak_rss_mb", "status", "psnr", "ssim", "sw2", "mean_err"]


def read(summary, name):
    return pd.read_csv(os.path.join(os.path.dirname(summary), name), dtype={"image_id": str})


def run_dir(cfg, summary):
    return os.path.join(cfg.run.root, summary["run"])


def test_one_cell_writes_rows_summary_grid_and_leaderboard(make_cfg):
    cfg = make_cfg(*FAST, "compute.batch_size=4")
    s = run_cell(cfg)
    d = run_dir(cfg, s)
    rows = pd.read_csv(os.path.join(d, "images.csv"), dtype={"image_id": str})
    assert list(rows["image_id"]) == ["0", "1", "2", "3", "4"]
    assert set(PROTOCOL) <= set(rows.columns)
    assert (rows["status"] == "ok").all() and (rows["nfe"] == 20).all() and (rows["vjp"] == 20).all()
    assert rows["sigma_y"].iloc[0] == 0.05 and rows["sigma_space"].iloc[0] == "[-1,1]"
    assert s["n_images"] == 5 and s["solver"] == "dps" and s["task"] == "inpaint_box"
    for f in ("config.yaml", "summary.csv", "grid.png"):
        assert os.path.exists(os.path.join(d, f))
    lb = pd.read_csv(cfg.run.leaderboard)
    assert list(lb["run"]) == [s["run"]]
    run_cell(cfg)  # a rerun of a finished cell computes nothing and keeps one leaderboard row
    assert len(pd.read_csv(cfg.run.leaderboard)) == 1


def test_resume_after_a_crash_keeps_every_image_exactly_once(make_cfg):
    cfg = make_cfg(*FAST, "compute.batch_size=4")  # 2 images per batch: batches {0,1}, {2,3}, {4}

    def crash(k):
        if k == 1:
            raise KeyboardInterrupt("killed after the second batch")

    with pytest.raises(KeyboardInterrupt):
        run_cell(cfg, after_batch=crash)
    from harness.records import RunDir
    from harness.runner import run_name
    rd = RunDir(cfg.run.root, run_name(cfg))
    before = rd.read_parts()
    assert sorted(before["image_id"]) == ["0", "1", "2", "3"]

    seen = []
    s = run_cell(cfg, after_batch=seen.append)
    assert seen == [0]  # only the missing image was computed
    rows = pd.read_csv(os.path.join(rd.path, "images.csv"), dtype={"image_id": str})
    assert list(rows["image_id"]) == ["0", "1", "2", "3", "4"]
    kept = rows.set_index("image_id").loc[["0", "1", "2", "3"], "timestamp"]
    assert list(kept) == list(before.set_index("image_id").loc[["0", "1", "2", "3"], "timestamp"])
    assert s["n_images"] == 5


def test_a_resumed_cell_carries_the_commit_that_computed_its_images(make_cfg, monkeypatch):
    """git_commit (and the other provenance columns) of a summary are its images' own: a finished cell rerun
    at a later commit keeps the commit that computed it; a cell resumed at another commit names both."""
    import harness.runner

    cfg = make_cfg(*FAST, "compute.batch_size=4")  # batches {0,1}, {2,3}, {4}
    monkeypatch.setattr(harness.runner, "git_commit", lambda: "aaa")

    def crash(k):
        if k == 0:
            raise KeyboardInterrupt("killed after the first batch")

    with pytest.raises(KeyboardInterrupt):
        run_cell(cfg, after_batch=crash)
    monkeypatch.setattr(harness.runner, "git_commit", lambda: "bbb")
    s = run_cell(cfg)
    assert s["git_commit"] == "aaa; bbb" and s["device"] == "cpu" and s["batch_size"] == 4
    assert list(pd.read_csv(cfg.run.leaderboard)["git_commit"]) == ["aaa; bbb"]
    monkeypatch.setattr(harness.runner, "git_commit", lambda: "ccc")  # nothing left to compute
    assert run_cell(cfg)["git_commit"] == "aaa; bbb"
    full = make_cfg(*FAST, "seed=1")
    run_cell(full)
    monkeypatch.setattr(harness.runner, "git_commit", lambda: "ddd")
    assert run_cell(full)["git_commit"] == "ccc"


def test_same_seed_gives_identical_measurements_and_outputs(make_cfg, tmp_path):
    a = make_cfg(*FAST, root=tmp_path / "a")
    b = make_cfg(*FAST, "compute.batch_size=2", root=tmp_path / "b")  # other batches, same results
    sa, sb = run_cell(a), run_cell(b)
    assert sa["run"] == sb["run"]
    ra, rb = read_rows(a, sa), read_rows(b, sb)
    assert list(ra["measurement_key"]) == list(rb["measurement_key"])
    ya = sorted(os.listdir(os.path.join(a.run.cache, "measurements")))
    assert ya == sorted(os.listdir(os.path.join(b.run.cache, "measurements")))
    for f in ya:
        ta = torch.load(os.path.join(a.run.cache, "measurements", f))
        tb = torch.load(os.path.join(b.run.cache, "measurements", f))
        assert torch.equal(ta["y"], tb["y"]) and torch.equal(ta["params"]["mask"], tb["params"]["mask"])
    xa = recon(a, sa)
    xb = recon(b, sb)
    assert max((xa[k] - xb[k]).abs().max().item() for k in xa) < 1e-5
    c = make_cfg(*FAST, "seed=1", root=tmp_path / "c")
    assert run_cell(c)["run"] != sa["run"]


def read_rows(cfg, s):
    return pd.read_csv(os.path.join(run_dir(cfg, s), "images.csv"), dtype={"image_id": str})


def recon(cfg, s):
    from harness.records import RunDir
    return RunDir(cfg.run.root, s["run"]).reconstructions()


def test_a_diverging_solver_is_a_result_not_a_crash(make_cfg):
    s = run_cell(make_cfg(*FAST, "solver.scale=inf"))
    assert s["n_diverged"] == 5 and s["n_ok"] == 0


@pytest.mark.parametrize("overrides,message", [
    (["compute.batch_size=0"], "compute.batch_size must be at least 1"),
    (["task.noise.sigma=-0.1"], "noise sigma must be >= 0"),
    (["task.box=20"], "does not fit a 16x16 image"),
    (["task=sr4", "task.factor=3"], "factor 3 does not divide the image size 16"),
    (["solver=exact", "task.noise.kind=poisson", "task.noise.rate=20"],
     "solver exact needs Gaussian measurement noise"),
])
def test_bad_input_fails_before_compute(make_cfg, overrides, message):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=message):
        run_cell(cfg)
    assert not os.path.exists(cfg.run.root)  # nothing was computed or written


def test_unknown_names_are_refused_before_hydra():
    from harness.cli import compose
    with pytest.raises(ConfigError, match="unknown solver 'nope'; choose one of: .*dps"):
        compose(["solver=nope"])
    with pytest.raises(ConfigError, match="unknown task 'sr5'"):
        compose(["task=sr4,sr5"])


@pytest.mark.parametrize("args,message", [
    (["solver=nope"], "error: unknown solver 'nope'; choose one of:"),
    (["dataset=ffhq_nope"], "error: unknown dataset 'ffhq_nope'"),
    (["compute.batch_size=0", "run.root=/nonexistent/x"], "error: compute.batch_size must be at least 1"),
])
def test_command_line_errors_are_one_sentence(args, message):
    p = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2
    assert p.stderr.strip().startswith(message), p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_sweep_aggregate_rebuilds_the_leaderboard_and_tables(make_cfg, tmp_path):
    import sweep

    for solver in ("pinv", "exact"):
        run_cell(make_cfg(f"solver={solver}", "dataset.n=2", "run.num_samples=2"))
    out = tmp_path / "lb2.csv"
    text = sweep.aggregate(str(tmp_path / "runs"), str(out), ["psnr"], resamples=200)
    assert "| solver | psnr ↑ |" in text and "| exact |" in text and "| pinv |" in text
    assert len(pd.read_csv(out)) == 2
    with pytest.raises(ConfigError, match="not a summary column"):
        sweep.aggregate(str(tmp_path / "runs"), str(out), ["nope"])
    rep = tmp_path / "report"
    text = sweep.aggregate(str(tmp_path / "runs"), None, ["psnr", "sw2"], str(rep), reference="pinv", resamples=200)
    assert "| solver | psnr ↑ | Δpsnr vs pinv | sw2 ↓ | Δsw2 vs pinv |" in text
    tex = (rep / "table.tex").read_text()
    assert "\\begin{tabular}" in tex
    assert (rep / "index.html").stat().st_size > 1000 and (rep / "world0_grid.png").exists()
    lb = pd.read_csv(rep / "leaderboard.csv")
    assert len(lb) == 2 and set(lb["world"]) == {0}
