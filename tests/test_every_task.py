"""Every task config runs a DPS cell on the exact world from the harness; every linear-Gaussian task gets
exact-posterior metrics (its closed-form posterior is built from the operator's dense matrix)."""
import os

import pytest

from harness.cli import CONF_DIR, compose
from harness.runner import run_cell

TASKS = sorted(f[:-5] for f in os.listdir(os.path.join(CONF_DIR, "task")) if f.endswith(".yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_dps_runs_on_every_task_in_the_exact_world(task, tmp_path):
    cfg = compose([f"task={task}", "solver=dps", "solver.steps=3", "dataset=gmm", "model=gmm", "dataset.n=1",
                   "run.num_samples=2", "metrics.n_ref=256", "run.progress=false", f"run.root={tmp_path}/runs",
                   f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache"])
    s = run_cell(cfg)
    assert s["n_images"] == 1 and s["nfe"] == 3 and s["vjp"] == 3
    linear_gaussian = task not in ("phase_retrieval", "hdr", "jpeg")
    assert ("sw2" in s) == linear_gaussian and ("mean_err" in s) == linear_gaussian
    if linear_gaussian:
        assert s["sw2_floor"] >= 0 and s["mean_err_floor"] >= 0
