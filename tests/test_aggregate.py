"""The run folders are the source of truth, the leaderboard a view: `--aggregate` rebuilds it by union
(rows of runs it did not read are kept unless --prune), under the upsert lock, atomically."""
import os
import shutil
import subprocess
import sys

import pandas as pd

from harness.records import RunDir, rebuild_leaderboard, upsert_leaderboard
from harness.runner import run_cell

from core.files import REPO_ROOT as ROOT
COMMITTED = os.path.join(ROOT, "results", "gmm_foundation_leaderboard.csv")
FAST = ["dataset.n=2", "run.num_samples=2", "compute.device=cpu", "metrics.n_ref=64"]


def test_aggregate_keeps_rows_from_another_root_and_from_committed_tables(make_cfg, tmp_path):
    import sweep

    lb = tmp_path / "leaderboard.csv"
    shutil.copy(COMMITTED, lb)  # a committed table's rows, made by runs that are not on this machine
    committed = pd.read_csv(COMMITTED)
    for solver in ("pinv", "exact"):
        run_cell(make_cfg(f"solver={solver}", *FAST, f"run.leaderboard={lb}", root=tmp_path / "a"))
    other = run_cell(make_cfg("solver=ddim", "solver.steps=3", *FAST, f"run.leaderboard={lb}", root=tmp_path / "b"))
    assert len(pd.read_csv(lb)) == len(committed) + 3

    text = sweep.aggregate(str(tmp_path / "a" / "runs"), str(lb), ["psnr"])
    rows = pd.read_csv(lb)
    assert len(rows) == len(committed) + 3 and rows["run"].is_unique
    assert set(committed["run"]) | {other["run"]} <= set(rows["run"])  # not read, kept
    assert "| exact |" in text and "| pinv |" in text  # the table shows the runs under the root it read

    p = subprocess.run([sys.executable, "sweep.py", "--aggregate", "--root", str(tmp_path / "a" / "runs"),
                        "--leaderboard", str(lb), "--prune"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(pd.read_csv(lb)["solver"]) == ["exact", "pinv"]  # --prune: only the runs it read


def test_a_rebuild_replaces_the_rows_of_the_runs_it_reads(make_cfg, tmp_path):
    cfg = make_cfg("solver=pinv", *FAST)
    s = run_cell(cfg)
    upsert_leaderboard(cfg.run.leaderboard, {**s, "psnr": -1.0})  # a stale row for that run
    upsert_leaderboard(cfg.run.leaderboard, {"run": "elsewhere", "psnr": 3.0})
    rows = rebuild_leaderboard([cfg.run.root], cfg.run.leaderboard).set_index("run")
    assert rows.loc[s["run"], "psnr"] == s["psnr"] and rows.loc["elsewhere", "psnr"] == 3.0 and len(rows) == 2


RACE = """
import sys
from harness.records import upsert_leaderboard, rebuild_leaderboard
lb, root, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    if who == "upsert":
        upsert_leaderboard(lb, {"run": f"upserted_{i}", "psnr": float(i)})
    else:
        rebuild_leaderboard([root], lb)
"""


def test_an_aggregate_racing_with_upserts_loses_nothing(tmp_path):
    root, lb = tmp_path / "runs", str(tmp_path / "leaderboard.csv")
    for i in range(3):  # three finished runs on disk
        RunDir(str(root), f"run_{i}").write_summary(pd.DataFrame([{"run": f"run_{i}", "psnr": 10.0 + i}]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    n = 40
    procs = [subprocess.Popen([sys.executable, "-c", RACE, lb, str(root), who, str(n)], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for who in ("upsert", "rebuild")]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    rows = pd.read_csv(lb)
    assert rows["run"].is_unique
    assert set(rows["run"]) == {f"upserted_{i}" for i in range(n)} | {f"run_{i}" for i in range(3)}


# -- summaries -----------------------------------------------------------------------------------------
def test_summary_averages_numeric_metrics_only_and_carries_agreeing_text(make_cfg, tmp_path):
    """Digits prompts are class names ("5"): text, never averaged; carried only when every image agrees."""
    digits = ["solver=ddim", "solver.steps=2", "dataset.n=4", "compute.device=cpu"]
    mixed = run_cell(make_cfg(*digits, world=None, root=tmp_path / "mixed"))
    assert "prompt" not in mixed
    rows = pd.read_csv(os.path.join(tmp_path, "mixed", "runs", mixed["run"], "images.csv"), dtype=str)
    assert rows["prompt"].nunique() > 1  # the four images are of different classes
    fives = run_cell(make_cfg(*digits, "+dataset.classes=5", world=None, root=tmp_path / "fives"))
    assert fives["prompt"] == "5"
    s = pd.read_csv(os.path.join(tmp_path, "fives", "runs", fives["run"], "summary.csv"), dtype={"prompt": str})
    assert s["prompt"].iloc[0] == "5"


def test_a_diverged_cell_keeps_its_cost(make_cfg):
    s = run_cell(make_cfg("solver=dps", "solver.steps=6", "solver.scale=inf", *FAST))
    assert s["n_diverged"] == 2 and s["n_ok"] == 0
    assert pd.isna(s.get("psnr", float("nan")))  # no image to average a metric over
    assert s["nfe"] == 6 and s["vjp"] == 6 and s["sec_per_sample"] > 0 and s["peak_rss_mb"] > 0


def test_summaries_without_checksums_are_read_when_complete(tmp_path, capfd):
    """Run folders written before checksums still aggregate; a damaged one is moved aside, its row kept."""
    from harness.records import read_summaries

    for name, text in (("old", "run,psnr\nold,1.5\n"), ("cut", "run,psnr\ncut")):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "summary.csv").write_text(text)
    upsert_leaderboard(str(tmp_path / "lb.csv"), {"run": "cut", "psnr": 2.0})
    capfd.readouterr()
    assert list(read_summaries([str(tmp_path)])["run"]) == ["old"]
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cut/summary.csv has an incomplete row" in err[0]
    assert sorted(rebuild_leaderboard([str(tmp_path)], str(tmp_path / "lb.csv"))["run"]) == ["cut", "old"]
