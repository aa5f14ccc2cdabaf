"""Integrity on resume: every kind of file the harness reads back, damaged three ways (emptied, truncated,
overwritten with random bytes), then the cell rerun. Each damaged file is reported in one sentence and moved
aside (never deleted); only the images it held are recomputed; the finished images.csv equals the one of
an uninterrupted run. A damaged leaderboard is refused before any compute (exit 2), and rebuilt by
`sweep.py --aggregate`. A cell of a sweep that fails with any error is reported and the others run."""
import glob
import json
import os
import random
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.records import RunDir
from harness.runner import run_cell, run_name
from core.errors import ConfigError

from core.files import REPO_ROOT as ROOT
# 4 images, 2 per batch (batch_size 4 = 2 images x 2 samples): batches {0,1} and {2,3}
CELL = ["solver=ddim", "solver.steps=3", "dataset.n=4", "run.num_samples=2", "compute.batch_size=4",
        "compute.device=cpu", "metrics.n_ref=64", "run.grid_images=2"]
TIMING = {"timestamp", "sec_per_sample", "metric_sec_per_sample", "peak_mem_mb", "peak_rss_mb"}
KINDS = ("part", "recon", "cache", "summary", "config", "cell", "leaderboard")
DAMAGES = ("empty", "truncated", "random")


def damage(path, how):
    data = open(path, "rb").read()
    out = {"empty": b"", "truncated": data[: len(data) // 2],
           "random": random.Random(0).randbytes(max(len(data), 64))}[how]
    with open(path, "wb") as f:
        f.write(out)


def images(root, name):
    df = pd.read_csv(os.path.join(root, "runs", name, "images.csv"), dtype={"image_id": str, "prompt": str})
    return df[[c for c in df.columns if c not in TIMING]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its folder, cache and leaderboard are copied for every damaged case."""
    from harness.cli import compose

    base = tmp_path_factory.mktemp("reference")
    cfg = compose(["+experiment=gmm", f"run.root={base}/runs", f"run.leaderboard={base}/leaderboard.csv",
                   f"run.cache={base}/cache", "run.progress=false", *CELL])
    s = run_cell(cfg)
    return base, s["run"]


def case(reference, tmp_path):
    from harness.cli import compose

    base, name = reference
    for sub in ("runs", "cache"):
        shutil.copytree(base / sub, tmp_path / sub)
    for f in ("leaderboard.csv", "leaderboard.csv.sha256"):
        shutil.copy(base / f, tmp_path / f)
    cfg = compose(["+experiment=gmm", f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/leaderboard.csv",
                   f"run.cache={tmp_path}/cache", "run.progress=false", *CELL])
    assert run_name(cfg) == name  # the root is not part of the cell: the copy is the same cell
    return cfg, os.path.join(tmp_path, "runs", name)


def target(kind, run, tmp_path):
    first = sorted(glob.glob(os.path.join(run, "parts", "*.csv")))[0]
    return {"part": first,
            "recon": os.path.join(run, "recon", os.path.basename(first)[:-4] + ".pt"),
            "cache": os.path.join(tmp_path, "cache", "measurements",  # image 0's: the grid reads it back
                                  images(tmp_path, os.path.basename(run))["measurement_key"].iloc[0] + ".pt"),
            "summary": os.path.join(run, "summary.csv"), "config": os.path.join(run, "config.yaml"),
            "cell": os.path.join(run, "cell.json"), "leaderboard": os.path.join(tmp_path, "leaderboard.csv")}[kind]


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_file_is_reported_moved_aside_and_only_its_images_recomputed(reference, tmp_path, capfd, kind, how):
    cfg, run = case(reference, tmp_path)
    path = target(kind, run, tmp_path)
    damage(path, how)
    capfd.readouterr()
    batches = []
    if kind == "leaderboard":  # found before any compute: one sentence (run.py exits 2 with it)
        parts = sorted(os.listdir(os.path.join(run, "parts")))
        with pytest.raises(ConfigError, match=r"leaderboard .* move it aside, or rebuild it from the run folders"):
            run_cell(cfg, after_batch=batches.append)
        assert batches == [] and sorted(os.listdir(os.path.join(run, "parts"))) == parts
        import sweep
        sweep.aggregate(str(tmp_path / "runs"), cfg.run.leaderboard, ["psnr"])  # the documented fix
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"warning: {path} ") and "moved to" in err[0], err
        assert glob.glob(f"{path}.corrupt-*")  # moved aside, not deleted
        lb = pd.read_csv(path)
        assert list(lb["run"]) == [os.path.basename(run)]
    s = run_cell(cfg, after_batch=batches.append)
    err = [ln for ln in capfd.readouterr().err.strip().splitlines() if ln]
    if kind != "leaderboard":
        assert len(err) == 1 and err[0].startswith("warning: ") and path in err[0] and "moved to" in err[0], err
        aside = os.path.join(os.path.dirname(path), "corrupt") if kind == "cache" else os.path.join(run, "corrupt")
        assert any(f.startswith(os.path.basename(path) + ".corrupt-") for f in os.listdir(aside))
    # only the damaged batch's images are recomputed (a measurement is redrawn, the same, without a solve)
    assert batches == ([0] if kind in ("part", "recon") else [])
    pd.testing.assert_frame_equal(images(tmp_path, s["run"]), images(reference[0], reference[1]))
    if kind == "cache":  # redrawn: the same measurement as the one that was damaged
        import torch
        a = torch.load(path, weights_only=True)
        b = torch.load(os.path.join(reference[0], os.path.relpath(path, tmp_path)), weights_only=True)
        assert torch.equal(a["y"], b["y"]) and all(torch.equal(a["params"][k], b["params"][k]) for k in b["params"])
    summary = pd.read_csv(os.path.join(run, "summary.csv"))
    assert summary["n_images"].iloc[0] == 4 and summary["n_ok"].iloc[0] == 4
    assert len(pd.read_csv(cfg.run.leaderboard)) == 1


def test_a_damaged_leaderboard_fails_before_compute_with_exit_2(tmp_path):
    lb = tmp_path / "leaderboard.csv"
    lb.write_text("run,psnr\nx,1\ny")  # a truncated row, as a killed editor or disk would leave it
    args = [sys.executable, "run.py", "+experiment=gmm", *CELL, f"run.root={tmp_path}/runs", f"run.leaderboard={lb}",
            f"run.cache={tmp_path}/cache", "run.progress=false"]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in p.stderr and err[0].startswith(f"error: leaderboard {lb} has an "
                                                                              "incomplete row"), p.stderr
    assert not os.path.exists(tmp_path / "runs") and not os.path.exists(tmp_path / "cache")


def test_a_kill_while_a_file_is_rewritten_leaves_it_verifiable(tmp_path):
    """write_checked lists the old and the new checksum while it replaces a file: either content verifies."""
    from harness.records import SUM, read_checked, sha256, write_checked

    p = str(tmp_path / "f.csv")
    write_checked(p, "a\n1\n")
    old = open(p, "rb").read()
    with open(p + SUM, "w") as f:  # the state after the first step of a rewrite to "a\n2\n"
        f.write(sha256(b"a\n2\n") + "\n" + sha256(old) + "\n")
    assert read_checked(p) == old
    write_checked(p, "a\n2\n")
    assert read_checked(p) == b"a\n2\n" and open(p + SUM).read().split() == [sha256(b"a\n2\n")]


def test_a_failing_cell_of_a_sweep_is_reported_and_the_others_run(tmp_path):
    """A run folder that cannot be written (its parts/ is a file) fails its cell with an OSError, not a
    ConfigError: the sweep reports it in one line, records it for sweep.py, and runs the other cell."""
    from harness.cli import compose

    common = ["+experiment=gmm", *CELL, f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv",
              f"run.cache={tmp_path}/cache", "run.progress=false"]
    bad = run_name(compose([*common, "solver=ddpm"]))
    os.makedirs(tmp_path / "runs" / bad)
    (tmp_path / "runs" / bad / "parts").write_text("not a folder")
    failures = tmp_path / "failures.jsonl"
    p = subprocess.run([sys.executable, "run.py", "--multirun", *common, "solver=ddpm,ddim"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DIFFINV_FAILURES": str(failures)})
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: cell")]
    assert len(errors) == 1 and "solver=ddpm" in errors[0] and "FileExistsError" in errors[0], p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    entry = [json.loads(ln) for ln in failures.read_text().splitlines()]
    assert len(entry) == 1 and "solver=ddpm" in entry[0]["cell"] and entry[0]["error"].startswith("FileExistsError")
    lb = pd.read_csv(tmp_path / "lb.csv")
    assert list(lb["solver"]) == ["ddim"]  # the other cell ran
    assert RunDir(str(tmp_path / "runs"), lb["run"].iloc[0]).done_ids() == {"0", "1", "2", "3"}
