"""Bookkeeping cost vs number of cells, per-cell sweep overhead, and start-up time (CPU seconds), of this
checkout and, with --compare DIR, of another checkout of the project (e.g. a worktree of main), measured
interleaved (each measure: the other checkout, then this one), so both see the same load.

    OMP_NUM_THREADS=1 python benchmarks/scaling.py [--upsert 10,1000,10000] [--aggregate 100,1000,10000]
        [--cells 3] [--compare DIR [--compare-label L]] [--skip-compare-aggregate 10000] [--out results/scaling.md]

- upsert: ms of CPU per leaderboard upsert of a new run into a leaderboard already holding N rows (synthetic
  summary rows of ~60 columns, like a real cell's), in a child process importing that checkout's
  harness.records: `steady` is the mean of --repeats upserts; `amortised` (checkouts with a journal) is the
  mean over max(N, 50) upserts from N rows, so it includes the folds of the journal into the table; `read`
  is one reader's fold (records.read_leaderboard) after those upserts;
- aggregate: CPU seconds of the whole `sweep.py --aggregate` command (process start included: read, verify
  and label N synthetic run summaries in 4 worlds x 25 solver configurations x N/100 seeds, the markdown
  tables, the rebuilt leaderboard) over N run folders;
- sweep: CPU seconds per cell of `python sweep.py` over --cells cheap cells of one model (GMM world, 1 image,
  2 steps), children's CPU included (process start, Hydra, model build, finish);
- startup: CPU seconds from process start to the first solver step (DIFFINV_STARTUP_CPU=1 hook of run.py).
Writes only --out (a markdown table, the command and the load average) and --out's .png (log-log: CPU per
upsert and per aggregate vs N). Times are CPU time (process_time / rusage of children), not wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = ("inpaint_box", "sr4", "deblur_gauss", "inpaint_random")


def summary_row(i: int) -> dict:
    """A synthetic summary row: 4 worlds (tasks) x 25 solver configurations (steps) x seeds i // 100."""
    row = {"run": f"gmm_dps_gmm_s{i}_{i:08x}", "solver": "dps", "task": TASKS[i % 4], "dataset": "gmm",
           "model": "gmm", "seed": i // 100, "noise": "gaussian", "sigma_y": 0.05, "num_samples": 1, "n_images": 16,
           "n_ok": 16, "n_diverged": 0, "image_ids": "0..15", "solver_params": f'{{"steps": {10 * (1 + (i // 4) % 25)}}}',
           "task_params": '{"box": 8}', "model_params": '{"name": "gmm"}', "git_commit": "0" * 40, "device": "cpu",
           "dtype": "float32", "batch_size": 16, "torch": "2.4"}
    row.update({f"m{k}": float(i % 97) / (k + 1) for k in range(36)})
    row.update(psnr=20 + (i % 13) * 0.1, ssim=0.5 + (i % 7) * 0.01)
    return row


UPSERT = r"""
import importlib.util, json, os, sys, tempfile, time
checkout, bench, n, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, checkout)
spec = importlib.util.spec_from_file_location("scaling_rows", bench)
rows = importlib.util.module_from_spec(spec); spec.loader.exec_module(rows)
import pandas as pd
from harness import records
out = {}
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "leaderboard.csv")
    records._write_leaderboard(path, pd.DataFrame([rows.summary_row(i) for i in range(n)]))
    t = time.process_time()
    for r in range(repeats):
        records.upsert_leaderboard(path, rows.summary_row(n + r))
    out["steady"] = (time.process_time() - t) / repeats * 1e3
    if hasattr(records, "read_leaderboard"):
        m = max(n, 50)
        t = time.process_time()
        for r in range(repeats, repeats + m):
            records.upsert_leaderboard(path, rows.summary_row(n + r))
        out["amortised"] = (time.process_time() - t) / m * 1e3
        t = time.process_time()
        view = records.read_leaderboard(path)
        out["read"] = (time.process_time() - t) * 1e3
        assert len(view) == n + repeats + m and view["run"].is_unique
print(json.dumps(out))
"""


def child_cpu(cmd, cwd=ROOT, env=None) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, p.stdout


def bench_upsert(checkout: str, n: int, repeats: int) -> dict:
    _, out = child_cpu([sys.executable, "-c", UPSERT, checkout, os.path.abspath(__file__), str(n), str(repeats)],
                       cwd=checkout)
    return json.loads(out.strip().splitlines()[-1])


def bench_aggregate(checkout: str, n: int) -> float:
    import pandas as pd

    sys.path.insert(0, ROOT)
    from harness.records import write_checked

    with tempfile.TemporaryDirectory() as d:
        for i in range(n):
            row = summary_row(i)
            os.makedirs(os.path.join(d, row["run"]))
            write_checked(os.path.join(d, row["run"], "summary.csv"), pd.DataFrame([row]).to_csv(index=False))
        cmd = [sys.executable, "sweep.py", "--aggregate", "--root", d, "--metrics", "psnr,ssim",
               "--leaderboard", os.path.join(d, "lb.csv")]
        return child_cpu(cmd, cwd=checkout)[0]


def world(d):
    return ["+experiment=gmm", "dataset.n=1", "metrics.n_ref=16", "compute.device=cpu", f"run.root={d}/runs",
            f"run.leaderboard={d}/lb.csv", f"run.cache={d}/cache", "run.progress=false"]


def bench_sweep(checkout: str, cells: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        seeds = ",".join(str(s) for s in range(cells))
        return child_cpu([sys.executable, "sweep.py", *world(d), "solver=dps", "solver.steps=2", f"seed={seeds}",
                          f"hydra.sweep.dir={d}/sweep"], cwd=checkout)[0] / cells


def bench_startup(checkout: str) -> float:
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "run.py", *world(d), "solver=dps", "solver.steps=2"], cwd=checkout,
                           env={**os.environ, "DIFFINV_STARTUP_CPU": "1", "HF_HUB_OFFLINE": "1"},
                           capture_output=True, text=True)
        m = re.search(r"startup_cpu_s=([0-9.]+)", p.stderr)
        if not m:
            raise SystemExit(f"no startup_cpu_s line: {p.stderr[-2000:]}")
        return float(m.group(1))


def commit_of(checkout: str) -> str:
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    return p.stdout.strip() or "?"


def ms(v) -> str:
    return "" if v is None else f"{v:.1f} ms"


def table(labels: list[str], res: dict) -> str:
    head = "| measure | N | " + " | ".join(labels) + " |\n|---|---:|" + "---:|" * len(labels) + "\n"
    lines = []
    for n in res["sizes_upsert"]:
        for key, name in (("steady", "upsert, per row (mean of --repeats)"),
                          ("amortised", "upsert, per row amortised (max(N, 50) upserts, folds included)"),
                          ("read", "reader's fold (read_leaderboard) after them")):
            vals = [res["upsert"][lab].get(n, {}).get(key) for lab in labels]
            if any(v is not None for v in vals):
                lines.append(f"| {name} | {n:,} | " + " | ".join(ms(v) if v is not None else "—" for v in vals) + " |")
    for n in res["sizes_aggregate"]:
        vals = [res["aggregate"][lab].get(n) for lab in labels]
        lines.append(f"| aggregate (whole command) | {n:,} | " + " | ".join(
            f"{v:.2f} s" if v is not None else "not run" for v in vals) + " |")
    lines.append(f"| sweep, per cell | {res['cells']} cells | " + " | ".join(f"{res['sweep'][lab]:.2f} s" for lab in labels) + " |")
    lines.append("| startup to first solve | 1 | " + " | ".join(f"{res['startup'][lab]:.2f} s" for lab in labels) + " |")
    return head + "\n".join(lines) + "\n"


def plot(path: str, labels: list[str], res: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    for k, lab in enumerate(labels):
        up = res["upsert"][lab]
        for key, style in (("steady", "o-"), ("amortised", "s--")):
            xs = [n for n in res["sizes_upsert"] if up.get(n, {}).get(key) is not None]
            if xs:
                ax[0].loglog(xs, [up[n][key] / 1e3 for n in xs], style, color=f"C{k}", label=f"{lab}: {key}")
        agg = res["aggregate"][lab]
        xs = [n for n in res["sizes_aggregate"] if agg.get(n) is not None]
        ax[1].loglog(xs, [agg[n] for n in xs], "o-", color=f"C{k}", label=lab)
    ax[0].set(xlabel="leaderboard rows N", ylabel="CPU s per upsert", title="upsert of a new run")
    ax[1].set(xlabel="run folders N", ylabel="CPU s (whole command)", title="sweep.py --aggregate")
    for a in ax:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upsert", default="10,1000,10000")
    ap.add_argument("--aggregate", default="100,1000,10000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cells", type=int, default=3)
    ap.add_argument("--compare", metavar="DIR", help="another checkout of the project, measured first ('before')")
    ap.add_argument("--compare-label", help="the label of --compare (default: its git commit)")
    ap.add_argument("--skip-compare-aggregate", default="", metavar="N,...",
                    help="aggregate sizes not run on --compare (too slow there), shown as 'not run'")
    ap.add_argument("--out", default="results/scaling.md")
    ap.add_argument("--remeasure-upsert", action="store_true",
                    help="measure only the upserts (interleaved as above) and replace them in --out's .json, keeping "
                         "its other measures; rewrites --out and the plot")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    checkouts = {}
    if a.compare:
        checkouts[f"before ({a.compare_label or commit_of(a.compare)})"] = os.path.abspath(a.compare)
    checkouts[f"after ({commit_of(ROOT)})"] = ROOT
    labels = list(checkouts)
    skip = {int(n) for n in a.skip_compare_aggregate.split(",") if n}
    res = {"sizes_upsert": [int(n) for n in a.upsert.split(",") if n],
           "sizes_aggregate": [int(n) for n in a.aggregate.split(",") if n], "cells": a.cells,
           "upsert": {lab: {} for lab in labels}, "aggregate": {lab: {} for lab in labels}, "sweep": {}, "startup": {}}
    load = [os.getloadavg()]
    if a.remeasure_upsert:
        with open(os.path.splitext(a.out)[0] + ".json") as f:
            prev = json.load(f)
        if len(prev["labels"]) != len(labels):
            raise SystemExit(f"{a.out}'s measures are of {prev['labels']}, not of {labels}")
        same = dict(zip(prev["labels"], labels))  # the same checkouts, perhaps at later commits
        num = lambda d: {int(k): v for k, v in d.items()}  # noqa: E731  (JSON keys are text)
        res.update(sizes_aggregate=prev["sizes_aggregate"], cells=prev["cells"],
                   sweep={same[k]: v for k, v in prev["sweep"].items()},
                   startup={same[k]: v for k, v in prev["startup"].items()},
                   aggregate={same[k]: num(v) for k, v in prev["aggregate"].items()})
        load = prev["load"] + [os.getloadavg()]
    for n in res["sizes_upsert"]:  # interleaved: each size on every checkout before the next size
        for lab, co in checkouts.items():
            res["upsert"][lab][n] = bench_upsert(co, n, a.repeats)
            print(lab, "upsert", n, res["upsert"][lab][n], flush=True)
    for n in [] if a.remeasure_upsert else res["sizes_aggregate"]:
        for lab, co in checkouts.items():
            if co != ROOT and n in skip:
                continue
            res["aggregate"][lab][n] = bench_aggregate(co, n)
            print(lab, "aggregate", n, res["aggregate"][lab][n], flush=True)
    load.append(os.getloadavg())
    for lab, co in [] if a.remeasure_upsert else checkouts.items():
        res["sweep"][lab] = bench_sweep(co, a.cells)
        res["startup"][lab] = bench_startup(co)
        print(lab, "sweep", res["sweep"][lab], "startup", res["startup"][lab], flush=True)
    load.append(os.getloadavg())
    text = table(labels, res)
    print(text)
    cmd = "OMP_NUM_THREADS=1 python benchmarks/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])
    loads = ", ".join(f"{x[0]:.1f}" for x in load)
    if a.remeasure_upsert:
        cmd += (f"` (the upserts; the other measures are those of the run before, of {', '.join(prev['labels'])}: "
                f"`{prev.get('command', '')}`)")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(f"# Scaling of the bookkeeping (CPU time)\n\n`{cmd}`\n\n1-minute load average at the start, after "
                f"the bookkeeping measures and at the end: {loads} (on {os.cpu_count()} cores).\n\n{text}")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump({**res, "labels": labels, "load": load, "command": cmd}, f, indent=1, default=str)
    plot(os.path.splitext(a.out)[0] + ".png", labels, res)


if __name__ == "__main__":
    main()
