"""Grids of cells (Hydra multirun of run.py), locally, as parallel processes or as a SLURM array; tables.

    python sweep.py solver=dps,ddim task=inpaint_box,sr4 solver.steps=50,100   # one cell after another
    python sweep.py +experiment=grid_gmm --report=results/sweep_gmm           # a named grid, then its report
    python sweep.py hydra/launcher=local_parallel ...                          # cells as parallel processes
    python sweep.py hydra/launcher=slurm hydra.launcher.partition=gpu ...      # a SLURM array (submitit)
    python sweep.py --aggregate [--root results/runs] [--metrics psnr,ssim] [--out table.md] [--report DIR]

Each cell resumes like `run.py` (finished images are skipped), so rerunning a sweep finishes it.
The whole command line is checked first, every cell of the grid (harness/validate.py): bad input exits 2
before any cell runs. A cell that cannot run (e.g. a solver that needs an SVD on a task without one) is
reported and skipped; at the end the sweep lists those cells and exits 2 (with the default, in-process
launcher: submitit launchers report refused cells in each cell's log).
"""
import argparse
import math
import os
import sys

from harness.cli import fail, fail_cells
from tasks.errors import ConfigError


HIGHER_IS_BETTER = ("psnr", "ssim", "target_")  # prefixes; every other metric (lpips, fid, kid, sw2, mean_err, cost) is lower-better


def higher_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER)


def _labels(df):
    """A row label per cell: the solver, plus the solver parameters that differ between its cells."""
    import json

    params = df["solver_params"].map(lambda s: json.loads(s) if isinstance(s, str) else {})
    labels = []
    for i, row in df.iterrows():
        same = params[df["solver"] == row["solver"]]
        varying = sorted(k for k in params[i] if len({json.dumps(p.get(k)) for p in same}) > 1)
        labels.append(" ".join([row["solver"], *(f"{k}={params[i][k]}" for k in varying)]))
    return labels


def _fmt(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.4g}" if isinstance(v, float) else str(v))


def paper_table(df, metrics: list[str], latex: bool = False) -> str:
    """Solvers × tasks (× metrics), 'mean ± std over images', the best of each column in bold."""
    tasks = sorted(df["task"].unique())
    cols = [(t, m) for t in tasks for m in metrics]
    labels = sorted(df["label"].unique(), key=lambda s: (s.split()[0], df.loc[df["label"] == s, "nfe"].mean()
                                                         if "nfe" in df else 0, s))
    best = {}
    for t, m in cols:
        v = df.loc[df["task"] == t].groupby("label")[m].mean().dropna()
        best[(t, m)] = (v.idxmax() if higher_better(m) else v.idxmin()) if len(v) else None
    arrow = (lambda m: "$\\uparrow$" if higher_better(m) else "$\\downarrow$") if latex else \
        (lambda m: "↑" if higher_better(m) else "↓")
    head = ["solver", *((f"{t} {m} {arrow(m)}" if len(metrics) > 1 else t) for t, m in cols)]
    rows = []
    for lab in labels:
        cells = [lab.replace("_", "\\_") if latex else lab]
        for t, m in cols:
            sel = df[(df["label"] == lab) & (df["task"] == t)]
            if not len(sel) or m not in sel or sel[m].isna().all():
                cells.append("")
                continue
            mean, std_col = float(sel[m].mean()), f"{m}_std_images"
            std = float(sel[std_col].mean()) if std_col in sel and sel[std_col].notna().any() else math.nan
            txt = _fmt(mean) + ("" if math.isnan(std) else (" $\\pm$ " if latex else " ± ") + f"{std:.2g}")
            if best[(t, m)] == lab:
                txt = f"\\textbf{{{txt}}}" if latex else f"**{txt}**"
            cells.append(txt)
        rows.append(cells)
    if latex:
        title = ", ".join(f"{m} ({'higher' if higher_better(m) else 'lower'} is better)" for m in metrics)
        head = [h.replace("_", "\\_") for h in head]
        lines = ["\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule", " & ".join(head) + " \\\\", "\\midrule"]
        lines += [" & ".join(r) + " \\\\" for r in rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return f"% {title}; mean $\\pm$ std over images; best in bold\n" + "\n".join(lines) + "\n"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def quality_vs_nfe(df, metric: str, out_dir: str) -> list[str]:
    """One PNG per task: the metric against NFE per reconstruction, a line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task, d in df.groupby("task"):
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        flat = []
        for solver, s in d.groupby("solver"):
            s = s.groupby("nfe", as_index=False)[[metric, *([f"{metric}_std_images"] if
                                                  f"{metric}_std_images" in s else [])]].mean().sort_values("nfe")
            if (s["nfe"] > 0).any():
                ax.plot(s["nfe"], s[metric], marker="o", label=solver)
            else:  # no network calls (exact sampler, pseudo-inverse): a reference level
                flat.append((solver, float(s[metric].mean())))
        for k, (solver, v) in enumerate(flat):
            ax.axhline(v, ls="--", lw=1, color=f"C{k + 5}", label=f"{solver} (0 NFE)")
        ax.set_xscale("log")
        ax.set_xlabel("NFE per reconstruction")
        ax.set_ylabel(f"{metric} ({'higher' if higher_better(metric) else 'lower'} is better)")
        ax.set_title(f"{task}: {metric} vs NFE")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(out_dir, f"quality_vs_nfe_{task}.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def aggregate(root: str, leaderboard: str, metrics: list[str], report: str | None = None, prune: bool = False) -> str:
    """Rebuild the leaderboard (one row per cell: its summary row) from the run folders under `root`, by union
    with the rows it holds (`records.rebuild_leaderboard`; `prune` drops rows of runs not found); return markdown: a paper-style solvers × tasks pivot of the chosen
    metrics (best in bold) and, for several metrics, one row per (task, solver). With `report`, also write
    table.md, table.tex and quality_vs_nfe_<task>.png (first metric) into that folder."""
    import pandas as pd

    from harness.records import atomic_write_text, rebuild_leaderboard

    # the run folders are the source of truth: their rows replace the leaderboard's, the rest are kept
    df = rebuild_leaderboard([root], leaderboard, prune=prune)
    if not len(df):
        raise ConfigError(f"no finished runs under {root}; run some cells first (python run.py ...).")
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ConfigError(f"{', '.join(missing)} is not a summary column; choose numeric columns of {leaderboard}.")
    text_cols = [m for m in metrics if not pd.api.types.is_numeric_dtype(df[m])]
    if text_cols:  # bad input: a protocol column such as run or solver is not a metric
        raise ConfigError(f"{', '.join(text_cols)} is not a numeric summary column; --metrics takes metrics such as "
                          f"psnr,ssim,lpips_vgg,nfe.")
    df["label"] = _labels(df)
    for m in metrics:
        std = df[f"{m}_std_images"] if f"{m}_std_images" in df else pd.Series(math.nan, index=df.index)
        df[f"{m}_pm"] = [_fmt(a) + ("" if math.isnan(b) else f" ± {b:.2g}") for a, b in zip(df[m], std)]
    text = f"Means over images of {len(df)} runs under {root} (± std over images; best of each column in bold).\n\n"
    text += paper_table(df, metrics)
    if len(metrics) > 1:
        table = df.sort_values(["task", "label"])
        head, rows = ["task", "solver", *metrics], table[["task", "label", *metrics]].values.tolist()
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        text += "\n" + "\n".join(lines + ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]) + "\n"
    if report:
        os.makedirs(report, exist_ok=True)
        atomic_write_text(os.path.join(report, "table.md"), text)
        atomic_write_text(os.path.join(report, "table.tex"), paper_table(df, metrics, latex=True))
        if "nfe" in df:
            quality_vs_nfe(df, metrics[0], report)
    return text


def main():
    if "--aggregate" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--aggregate", action="store_true")
        ap.add_argument("--root", default="results/runs")
        ap.add_argument("--leaderboard", help="default: results/leaderboard.csv, or <report>/leaderboard.csv")
        ap.add_argument("--metrics", default="psnr", help="comma-separated summary columns")
        ap.add_argument("--out", help="also write the markdown table to this file")
        ap.add_argument("--report", help="folder for leaderboard.csv, table.md, table.tex and quality-vs-NFE plots")
        ap.add_argument("--prune", action="store_true", help="drop leaderboard rows of runs not found under --root")
        a = ap.parse_args()
        lb = a.leaderboard or (os.path.join(a.report, "leaderboard.csv") if a.report else "results/leaderboard.csv")
        text = aggregate(a.root, lb, a.metrics.split(","), a.report, a.prune)
        if a.out:
            with open(a.out, "w") as f:
                f.write(f"`python sweep.py {' '.join(sys.argv[1:])}`\n\n{text}")
        print(text)
        return
    report, metrics, args = None, "psnr,ssim", []
    for arg in sys.argv[1:]:  # --report DIR / --metrics a,b: aggregate the grid's runs once it has finished
        key, _, value = arg.partition("=")
        if key == "--report":
            report = value
        elif key == "--metrics":
            metrics = value
        else:
            args.append(arg)
    from harness.validate import check_command_line

    check_command_line(args, multirun=True)  # every cell of the grid, before torch is imported
    root = None
    if report:
        from harness.cli import compose
        root = str(compose([a for a in args if not a.startswith(("hydra", "--"))]).run.root)
    import run

    sys.argv[1:] = ["--multirun", *args]
    failed = run.main()
    if report:
        text = aggregate(root, os.path.join(report, "leaderboard.csv"), metrics.split(","), report)
        print(text)
    fail_cells(failed)  # exit codes: 2 when a cell was refused (see run.FAILED)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        fail(str(e))
