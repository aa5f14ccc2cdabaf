"""Grids of cells (the full sweep machinery, SLURM and paper tables come with issue #6).

    python sweep.py solver=dps,ddim task=inpaint_box,sr4 solver.steps=50,100   # Hydra multirun of run.py
    python sweep.py --aggregate [--root results/runs] [--metrics psnr,ssim] [--out table.md]

Each cell resumes like `run.py` (finished images are skipped), so rerunning a sweep finishes it.
A cell that cannot run (e.g. a solver that needs an SVD on a task without one) is reported and skipped.
"""
import argparse
import glob
import math
import os
import sys

from harness.cli import check_overrides, fail
from tasks.errors import ConfigError


def aggregate(root: str, leaderboard: str, metrics: list[str]) -> str:
    """Rebuild the leaderboard from every run's summary row; return a markdown table: a solvers × tasks
    pivot for one metric, or one row per (task, solver) with a column per metric."""
    import pandas as pd

    from harness.records import atomic_write_csv

    files = sorted(glob.glob(os.path.join(root, "*", "summary.csv")))
    if not files:
        raise ConfigError(f"no finished runs under {root}; run some cells first (python run.py ...).")
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    atomic_write_csv(leaderboard, df)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ConfigError(f"{', '.join(missing)} is not a summary column; choose numeric columns of {leaderboard}.")
    fmt = lambda v: "" if isinstance(v, float) and math.isnan(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    if len(metrics) == 1:
        table = df.pivot_table(index="solver", columns="task", values=metrics[0], aggfunc="mean")
        head, rows = ["solver", *table.columns], [[s, *r] for s, r in zip(table.index, table.values.tolist())]
    else:
        table = df.sort_values(["task", "solver"])
        head, rows = ["task", "solver", *metrics], table[["task", "solver", *metrics]].values.tolist()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return f"Means over images of {len(df)} runs under {root}.\n\n" + "\n".join(lines) + "\n"


def main():
    if "--aggregate" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--aggregate", action="store_true")
        ap.add_argument("--root", default="results/runs")
        ap.add_argument("--leaderboard", default="results/leaderboard.csv")
        ap.add_argument("--metrics", default="psnr", help="comma-separated summary columns")
        ap.add_argument("--out", help="also write the markdown table to this file")
        a = ap.parse_args()
        text = aggregate(a.root, a.leaderboard, a.metrics.split(","))
        if a.out:
            with open(a.out, "w") as f:
                f.write(f"`python sweep.py {' '.join(sys.argv[1:])}`\n\n{text}")
        print(text)
        return
    check_overrides(sys.argv[1:])
    import run

    sys.argv.insert(1, "--multirun")
    run.main()


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        fail(str(e))
