"""hydra/launcher=gpu_pool: one worker per GPU, each job with its own CUDA_VISIBLE_DEVICES, G jobs at a time."""
import os
import subprocess
import sys

import pytest

from harness.cli import REPO_ROOT
from hydra_plugins.diffinv_gpu_pool.gpu_pool import pool_devices
from core.errors import ConfigError

APP = os.path.join(REPO_ROOT, "tests", "gpu_pool_app.py")


def sweep(tmp_path, jobs, wait_for, visible, extra=()):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "PYTHONPATH": REPO_ROOT}
    cmd = [sys.executable, APP, "--multirun", "hydra/launcher=gpu_pool", "hydra.launcher.poll_s=0.1",
           f"hydra.sweep.dir={tmp_path}/sweep", f"+out={out}", f"+wait_for={wait_for}",
           f"+i={','.join(map(str, range(jobs)))}", *extra]
    r = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {}
    for i in range(jobs):
        device, start, end = (out / f"done_{i}").read_text().split()
        rows[i] = (device, float(start), float(end))
    return rows


def test_three_concurrent_workers_get_three_distinct_devices(tmp_path):
    # a faked node of 3 GPUs: the parent's CUDA_VISIBLE_DEVICES lists them (as a SLURM allocation would)
    rows = sweep(tmp_path, jobs=3, wait_for=3, visible="4,5,6")
    assert sorted(d for d, _, _ in rows.values()) == ["4", "5", "6"]
    # they ran at the same time: every job started before any ended
    assert max(s for _, s, _ in rows.values()) < min(e for _, _, e in rows.values())


def test_more_jobs_than_gpus_never_share_a_device_at_once(tmp_path):
    rows = sweep(tmp_path, jobs=5, wait_for=2, visible="", extra=["hydra.launcher.gpus=2"])
    assert {d for d, _, _ in rows.values()} == {"0", "1"}
    for i, (di, si, ei) in rows.items():
        for j, (dj, sj, ej) in rows.items():
            if i < j and di == dj:
                assert ei <= sj or ej <= si, f"jobs {i} and {j} overlapped on GPU {di}"


def test_the_pool_comes_from_config_then_environment():
    assert pool_devices(3, {}) == ["0", "1", "2"]
    assert pool_devices(["GPU-a", "GPU-b"], {}) == ["GPU-a", "GPU-b"]
    assert pool_devices(None, {"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    with pytest.raises(ConfigError, match="twice"):
        pool_devices([1, 1], {})
    with pytest.raises(ConfigError, match="no GPU"):
        pool_devices(0, {})
