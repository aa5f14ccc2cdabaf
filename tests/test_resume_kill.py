"""A run killed with SIGKILL at random points, again and again, then rerun to completion: every image is
recorded exactly once, the leaderboard holds one row for the cell, and no temp file is left behind."""
import glob
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd

from core.files import REPO_ROOT as ROOT
N_IMAGES = 12


def test_sigkill_at_random_points_then_rerun_loses_and_duplicates_nothing(tmp_path):
    args = [sys.executable, "run.py", "dataset=gmm", "model=gmm", "solver=dps", "solver.steps=8",
            f"dataset.n={N_IMAGES}", "run.num_samples=2", "compute.batch_size=2", "compute.device=cpu",
            "metrics.n_ref=64", "run.grid_images=2", f"run.root={tmp_path}/runs",
            f"run.leaderboard={tmp_path}/leaderboard.csv", f"run.cache={tmp_path}/cache", "run.progress=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    rng = random.Random(0)  # where to kill: the test's own choice, seeded
    parts = lambda: len(glob.glob(f"{tmp_path}/runs/*/parts/*.csv"))  # noqa: E731 - one image per batch
    kills = 0
    for target in (rng.randint(1, N_IMAGES - 2), N_IMAGES):  # mid-run, then inside finish()
        p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while parts() < target and p.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 1

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = glob.glob(f"{tmp_path}/runs/*")
    assert len(run_dir) == 1
    rows = pd.read_csv(os.path.join(run_dir[0], "images.csv"), dtype={"image_id": str})
    assert sorted(rows["image_id"], key=int) == [str(i) for i in range(N_IMAGES)]  # each exactly once
    assert (rows["status"] == "ok").all()
    lb = pd.read_csv(tmp_path / "leaderboard.csv")
    assert len(lb) == 1 and lb["n_images"].iloc[0] == N_IMAGES
    assert not glob.glob(f"{tmp_path}/**/*.tmp*", recursive=True)  # stale temp files were cleaned up
    recon = glob.glob(os.path.join(run_dir[0], "recon", "*.pt"))
    assert {os.path.basename(r)[:-3] for r in recon} >= {os.path.basename(c)[:-4] for c in
                                                           glob.glob(os.path.join(run_dir[0], "parts", "*.csv"))}
