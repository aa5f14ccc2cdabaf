"""One cell run as shards (run.shard=K/N: ids[K::N]) in separate processes, in shuffled order, one shard
SIGKILLed mid-run and rerun: images.csv and the summary (FID/KID included) equal the unsharded cell's; a
shard whose identity differs from the cell's folder is refused before compute in one sentence."""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from core.files import REPO_ROOT as ROOT

N_IMAGES = 9
TIMING = ("sec_per_sample", "metric_sec_per_sample", "peak_rss_mb", "peak_mem_mb", "timestamp",
          "wall_seconds_this_call", "git_commit")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def args(root, *extra):
    return [sys.executable, "run.py", "dataset=gmm", "model=gmm", "solver=dps", "solver.steps=6",
            f"dataset.n={N_IMAGES}", "run.num_samples=2", "compute.batch_size=2", "compute.device=cpu",
            "metrics.n_ref=64", "run.grid_images=2", "metrics.set=[fid,kid]",
            "metrics.fid_features=tests.tiny_features:features", f"run.root={root}/runs",
            f"run.leaderboard={root}/leaderboard.csv", f"run.cache={root}/cache", "run.progress=false", *extra]


def run(cmd, ok=True):
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def cell_files(root):
    (d,) = glob.glob(f"{root}/runs/*")
    images = pd.read_csv(os.path.join(d, "images.csv"), dtype={"image_id": str})
    summary = pd.read_csv(os.path.join(d, "summary.csv"))
    return os.path.basename(d), images.drop(columns=[c for c in TIMING if c in images]), \
        summary.drop(columns=[c for c in TIMING if c in summary])


def test_three_shards_shuffled_one_killed_equal_the_whole_cell(tmp_path):
    whole, shards = tmp_path / "whole", tmp_path / "shards"
    run(args(whole))
    order = [0, 1, 2]
    random.Random(1).shuffle(order)
    parts = lambda: len(glob.glob(f"{shards}/runs/*/parts/*.csv"))  # noqa: E731
    killed = order[1]
    for k in order:
        cmd = args(shards, f"run.shard={k}/3")
        if k == killed:  # killed after its first batch, before its last
            before = parts()
            p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 120
            while parts() < before + 1 and p.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            assert p.poll() is None, "the shard finished before it could be killed"
            p.send_signal(signal.SIGKILL)
            p.wait()
            assert parts() < before + 2  # shard k has 3 images: 2 batches of batch_size 2
        else:
            out = run(cmd)
            if k != order[-1]:  # not complete yet: nothing of the cell's own files is written
                assert "is finished by the shard that completes it" in out.stderr
                assert not glob.glob(f"{shards}/runs/*/summary.csv") and not glob.glob(f"{shards}/runs/*/images.csv")
                assert not os.path.exists(shards / "leaderboard.csv")
    assert not glob.glob(f"{shards}/runs/*/summary.csv")  # the killed shard's images are still missing
    out = run(args(shards, f"run.shard={killed}/3"))  # the rerun resumes after its recorded batch and finishes
    name_w, img_w, sum_w = cell_files(whole)
    name_s, img_s, sum_s = cell_files(shards)
    assert name_w == name_s  # the shard key is outside the identity: one cell, one folder name
    assert list(img_s["image_id"]) == [str(i) for i in range(N_IMAGES)]  # every image once, in the cell's order
    pd.testing.assert_frame_equal(img_w, img_s)
    assert {"fid", "kid", "psnr", "sw2"} <= set(sum_s.columns) and sum_s["fid_n"].iloc[0] == N_IMAGES
    pd.testing.assert_frame_equal(sum_w, sum_s)
    lb = pd.read_csv(shards / "leaderboard.csv")
    assert len(lb) == 1 and lb["n_images"].iloc[0] == N_IMAGES
    # finishing again (explicitly) is idempotent: the same rows and metrics
    run(args(shards, "run.finish=true"))
    _, img_2, sum_2 = cell_files(shards)
    pd.testing.assert_frame_equal(img_s, img_2)
    pd.testing.assert_frame_equal(sum_s, sum_2)
    assert len(pd.read_csv(shards / "leaderboard.csv")) == 1


@pytest.mark.parametrize("change,key", [("solver.steps=7", "solver.steps"), ("compute.dtype=float64", "compute.dtype")])
def test_a_shard_with_other_settings_is_refused_before_compute(make_cfg, change, key):
    from harness.records import RunDir
    from harness.runner import run_cell
    from core.errors import ConfigError

    base = ["solver=dps", "solver.steps=6", "dataset.n=4", "metrics.n_ref=16", "run.name=cellA"]
    s = run_cell(make_cfg(*base, "run.shard=0/2"))
    assert s["finished"] is False and s["n_images"] == 2
    cfg = make_cfg(*base, "run.shard=1/2", change)
    calls = []
    with pytest.raises(ConfigError) as e:
        run_cell(cfg, after_batch=calls.append)
    msg = str(e.value)
    assert key in msg and "holds another cell" in msg and msg.count(". ") == 0 and msg.endswith(".")
    assert calls == [] and len(RunDir(cfg.run.root, "cellA").done_ids()) == 2  # nothing computed or written


def test_finish_refuses_an_incomplete_cell_and_bad_shard_values(make_cfg):
    from harness.runner import run_cell
    from core.errors import ConfigError

    base = ["solver=dps", "solver.steps=4", "dataset.n=4", "metrics.n_ref=16"]
    run_cell(make_cfg(*base, "run.shard=1/3"))
    with pytest.raises(ConfigError, match=r"has 1 of its 4 images recorded; run its missing shards"):
        run_cell(make_cfg(*base, "run.finish=true"))
    for bad in ("3/3", "1of3", "-1/2"):
        with pytest.raises(ConfigError, match=r"run.shard must be K/N with 0 <= K < N"):
            run_cell(make_cfg(*base, f"run.shard={bad}"))
    s = run_cell(make_cfg(*base))  # the whole cell skips shard 1's image and finishes
    assert s["n_images"] == 4


def test_cells_of_one_model_share_the_loaded_prior(make_cfg, tmp_path):
    import shutil

    from harness import build
    from core.files import REPO_ROOT

    a = build.build_cell(make_cfg("solver=dps", "solver.steps=4"))
    b = build.build_cell(make_cfg("solver=ddim", "solver.steps=4"))
    assert a.prior is b.prior  # two cells of the gmm model: loaded once
    c = build.build_cell(make_cfg("solver=dps", "model.rank=16"))
    assert c.prior is not a.prior  # another model config: its own prior
    weights = tmp_path / "w"
    shutil.copytree(os.path.join(REPO_ROOT, "models/weights/digits_pixel"), weights)
    d1 = build.build_cell(make_cfg(f"model.path={weights}", "solver=dps", world=None))
    d2 = build.build_cell(make_cfg(f"model.path={weights}", "solver=ddim", world=None))
    assert d1.prior is d2.prior
    f = max((p for p in weights.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes())  # a rewritten checkpoint (new mtime) is loaded afresh
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert build.build_cell(make_cfg(f"model.path={weights}", "solver=dps", world=None)).prior is not d1.prior


def test_shards_from_a_count_or_a_time_budget():
    import sweep
    from core.errors import ConfigError

    base = ["model=gmm", "dataset=gmm", "dataset.n=1000", "compute.batch_size=4"]
    out = sweep.shard_overrides([*base, "run.shards=50"])
    assert out[:-1] == base and out[-1] == "run.shard=" + ",".join(f"{k}/50" for k in range(50))
    # 1000 images x 90 s in tasks of 0.8 x 240 min: ceil(90000 / 11520) = 8 shards
    assert sweep.shard_overrides([*base, "run.sec_per_image=90"])[-1].endswith(",7/8")
    assert sweep.shard_overrides([*base, "run.sec_per_image=90", "hydra.launcher.timeout_min=60"])[-1].endswith(",31/32")
    with pytest.raises(ConfigError, match=r"a batch of compute.batch_size=4 takes 14400 s, beyond one task's 11520 s"):
        sweep.shard_overrides([*base, "run.sec_per_image=3600"])
    with pytest.raises(ConfigError, match=r"run.shards must be a positive integer"):
        sweep.shard_overrides([*base, "run.shards=0"])
