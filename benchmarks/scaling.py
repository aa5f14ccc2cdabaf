"""Bookkeeping cost vs number of cells, per-cell sweep overhead, and start-up time (CPU seconds).

    python benchmarks/scaling.py [--upsert 10,1000,10000] [--aggregate 100,1000] [--cells 3] [--label after]
                                 [--out results/scaling.md] [--append]

- upsert: ms of CPU per leaderboard upsert of a new run into a leaderboard already holding N rows
  (synthetic summary rows of ~60 columns, like a real cell's; the mean of --repeats upserts);
- aggregate: CPU seconds of `sweep.py --aggregate` (read, verify and label N synthetic run summaries, then
  the markdown tables; no leaderboard written) over N run folders (--aggregate sizes);
- sweep: CPU seconds per cell of `python sweep.py` over --cells cheap cells of one model (GMM world, 1 image,
  2 steps), children's CPU included (process start, Hydra, model build, finish);
- startup: CPU seconds from process start to the first solver step (DIFFINV_STARTUP_CPU=1 hook of run.py).
Writes only --out (a markdown table; --append adds this --label's table to the file) and --out's .png
(log-log: CPU per upsert / aggregate vs N). Times are CPU time (process_time), not wall time.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def summary_row(i: int) -> dict:
    row = {"run": f"gmm_inpaint_box_dps_gmm_s{i}_{i:08x}", "solver": "dps", "task": "inpaint_box", "dataset": "gmm",
           "model": "gmm", "seed": i, "noise": "gaussian", "sigma_y": 0.05, "num_samples": 1, "n_images": 16,
           "n_ok": 16, "n_diverged": 0, "image_ids": "0..15", "solver_params": '{"steps": 50}',
           "task_params": '{"box": 8}', "model_params": '{"name": "gmm"}', "git_commit": "0" * 40, "device": "cpu",
           "dtype": "float32", "batch_size": 16, "torch": "2.4"}
    row.update({f"m{k}": float(i % 97) / (k + 1) for k in range(36)})
    row.update(psnr=20 + (i % 13) * 0.1, ssim=0.5 + (i % 7) * 0.01)
    return row


def bench_upsert(sizes, repeats) -> dict:
    import pandas as pd

    from harness.records import _write_leaderboard, upsert_leaderboard

    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "leaderboard.csv")
            _write_leaderboard(path, pd.DataFrame([summary_row(i) for i in range(n)]))
            t = time.process_time()
            for r in range(repeats):
                upsert_leaderboard(path, summary_row(n + r))
            out[n] = (time.process_time() - t) / repeats * 1e3
    return out


def bench_aggregate(sizes) -> dict:
    import pandas as pd

    from harness.records import write_checked

    out = {}
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            for i in range(n):
                row = summary_row(i)
                os.makedirs(os.path.join(d, row["run"]))
                write_checked(os.path.join(d, row["run"], "summary.csv"), pd.DataFrame([row]).to_csv(index=False))
            cmd = [sys.executable, "sweep.py", "--aggregate", "--root", d, "--metrics", "psnr,ssim",
                   "--leaderboard", os.path.join(d, "lb.csv")]
            out[n] = child_cpu(cmd)
    return out


def child_cpu(cmd, env=None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def world(d):
    return ["+experiment=gmm", "dataset.n=1", "metrics.n_ref=16", "compute.device=cpu", f"run.root={d}/runs",
            f"run.leaderboard={d}/lb.csv", f"run.cache={d}/cache", "run.progress=false"]


def bench_sweep(cells: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        seeds = ",".join(str(s) for s in range(cells))
        return child_cpu([sys.executable, "sweep.py", *world(d), "solver=dps", "solver.steps=2", f"seed={seeds}",
                          f"hydra.sweep.dir={d}/sweep"]) / cells


def bench_startup() -> float:
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "run.py", *world(d), "solver=dps", "solver.steps=2"], cwd=ROOT,
                           env={**os.environ, "DIFFINV_STARTUP_CPU": "1", "HF_HUB_OFFLINE": "1"},
                           capture_output=True, text=True)
        m = re.search(r"startup_cpu_s=([0-9.]+)", p.stderr)
        if not m:
            raise SystemExit(f"no startup_cpu_s line: {p.stderr[-2000:]}")
        return float(m.group(1))


def table(label, up, agg, sweep, startup) -> str:
    lines = [f"### {label}", "", "| measure | N | CPU |", "|---|---:|---:|"]
    lines += [f"| upsert (ms per row) | {n:,} | {v:.1f} ms |" for n, v in up.items()]
    lines += [f"| aggregate (whole command) | {n:,} | {v:.2f} s |" for n, v in agg.items()]
    lines += [f"| sweep, per cell | {sweep[0]} cells | {sweep[1]:.2f} s |", f"| startup to first solve | 1 | {startup:.2f} s |"]
    return "\n".join(lines) + "\n"


def plot(path, label, up, agg):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
    ax[0].loglog(list(up), [v / 1e3 for v in up.values()], "o-", label=label)
    ax[0].set(xlabel="leaderboard rows", ylabel="CPU s per upsert", title="upsert")
    ax[1].loglog(list(agg), list(agg.values()), "o-", label=label)
    ax[1].set(xlabel="cells", ylabel="CPU s", title="--aggregate")
    for a in ax:
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upsert", default="10,1000,10000")
    ap.add_argument("--aggregate", default="100,1000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--out", default="results/scaling.md")
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    up = bench_upsert([int(n) for n in a.upsert.split(",") if n], a.repeats)
    agg = bench_aggregate([int(n) for n in a.aggregate.split(",") if n])
    sweep = (a.cells, bench_sweep(a.cells))
    text = table(a.label, up, agg, sweep, bench_startup())
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "a" if a.append else "w") as f:
        f.write(text if a.append else f"# Scaling of the bookkeeping (CPU time)\n\n`{' '.join(sys.argv)}`\n\n{text}")
    plot(os.path.splitext(a.out)[0] + f"_{re.sub(r'[^A-Za-z0-9]+', '_', a.label)}.png", a.label, up, agg)


if __name__ == "__main__":
    main()
