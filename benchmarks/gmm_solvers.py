"""Every pixel solver on the exact GMM world (inpaint_box, sr4, deblur_gauss_circ): results/gmm_solvers.md.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/gmm_solvers.py [--out results/gmm_solvers.md]
        [--root results/runs] [--leaderboard results/gmm_leaderboard.csv] [--tasks inpaint_box,sr4] [--solvers dps,ddrm]

With --solvers and an existing --out, only those solvers' rows are replaced (merge_rows): the other rows and
the file's text around the tables stay as they are. Run names do not change with code: to recompute a row
after a solver fix, give a fresh --root (or delete its run folders).

Each cell is `python run.py dataset=gmm model=gmm run.num_samples=16 dataset.n=8 metrics.n_ref=512 task=T solver=S
[extra]` composed with harness.cli.compose and run with harness.runner.run_cell; rows go to
results/gmm_leaderboard.csv. metrics.n_ref=512 (not 2048) keeps the exact-posterior metrics under 1 s per image.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cli import compose  # noqa: E402
from harness.report import markdown_table  # noqa: E402

from core.errors import ConfigError  # noqa: E402
from harness.runner import run_cell  # noqa: E402

TASKS = ["inpaint_box", "sr4", "deblur_gauss_circ"]
# (name, solver config, extra overrides per task or for all)
SOLVERS = [
    ("exact", "exact", {}), ("pinv", "pinv", {}), ("ddim", "ddim", {}), ("dps", "dps", {}),
    ("dps_dsg", "dps_dsg", {}), ("ddrm", "ddrm", {}), ("pigdm", "pigdm", {}), ("ddnm", "ddnm", {}),
    ("ddnm_plus", "ddnm_plus", {}), ("reddiff", "reddiff", {}),
    ("diffpir", "diffpir", {"inpaint_box": ["solver.steps=20", "solver.zeta=1.0"]}),  # official inpainting setting
    ("daps (50×2, 50 Langevin)", "daps", {"*": ["solver.annealing_steps=50", "solver.ode_steps=2",
                                                "solver.langevin_steps=50"],
                                          "inpaint_box": ["solver.lr=5e-5"]}),  # official box-inpainting lr
    ("freedom", "freedom", {}), ("mcg", "mcg", {}),
]
BASE = ["dataset=gmm", "model=gmm", "run.num_samples=16", "dataset.n=8", "metrics.n_ref=512", "run.progress=false"]
COLS = ["sw2", "sw2_floor", "mean_err", "mean_err_floor", "psnr", "nfe", "vjp", "sec_per_sample"]


def refuse_bad_merge(names: set, known: set, text: str, tasks: list, out) -> None:
    """Exit 2 with one sentence, before any compute, when --solvers names a solver the table does not have or
    the file to merge into lacks a `## <task>` section (both benchmark scripts)."""
    bad = sorted(names - known) or [t for t in tasks if f"## {t}" not in text.split("\n")]
    if bad:
        print(f"error: {', '.join(bad)}: --solvers takes names of the table's solvers ({', '.join(sorted(known))}) "
              f"and merges into an existing {out} with `## <task>` sections; run without --solvers first.",
              file=sys.stderr)
        sys.exit(2)


def merge_rows(text: str, section: str, rows: list[list]) -> str:
    """`text` (a markdown file of `## <section>` tables, rows keyed by their first cell) with each of `rows`
    replacing the row of the same key in that section's table; a key the table lacks is appended to it."""
    lines, out, i, new = text.split("\n"), [], 0, {str(r[0]): r for r in rows}
    fmt = lambda r: markdown_table([""] * len(r), [r]).splitlines()[-1]  # noqa: E731  (the one row writer)
    heading = f"## {section}"
    if heading not in lines:
        raise ConfigError(f"the table file has no `{heading}` section to merge into; run without --solvers.")
    while i < len(lines):
        out.append(lines[i])
        if lines[i] == heading:
            i += 1
            while i < len(lines) and not lines[i].startswith("|"):
                out.append(lines[i])
                i += 1
            seen = set()
            while i < len(lines) and lines[i].startswith("|"):
                key = lines[i].split(" | ")[0][2:]
                out.append(fmt(new[key]) if key in new else lines[i])
                seen.add(key)
                i += 1
            out.extend(fmt(r) for k, r in new.items() if k not in seen)
            continue
        i += 1
    return "\n".join(out)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Every pixel solver on the exact GMM world; writes only where told.")
    ap.add_argument("--out", default="results/gmm_solvers.md", help="markdown table (default %(default)s)")
    ap.add_argument("--root", default="results/runs", help="run folders (default %(default)s)")
    ap.add_argument("--leaderboard", default="results/gmm_leaderboard.csv", help="rows (default %(default)s)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated (default %(default)s)")
    ap.add_argument("--solvers", default=None, help="comma-separated names of SOLVERS (default: all)")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    base = [*BASE, f"run.root={a.root}", f"run.leaderboard={a.leaderboard}"]
    names = None if a.solvers is None else set(a.solvers.split(","))
    chosen = [s for s in SOLVERS if names is None or s[0] in names or s[1] in names]  # shown name or config
    lines = ["# Solvers on the exact GMM world (16×16 digits mixture, σ_y = 0.05 on [-1,1])", "",
             "Command: `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/gmm_solvers.py` — each cell is",
             f"`python run.py {' '.join(BASE)} task=<task> solver=<solver> [overrides]`", "",
             "8 images × 16 samples per cell; mean over images. CPU (2 shared cores), float32. "
             "sw2 / mean_err against the exact posterior; *_floor is what exact samples score at the same N.", ""]
    merge = names is not None and Path(a.out).exists()
    text = Path(a.out).read_text() if merge else ""
    if names is not None:
        refuse_bad_merge(names, {s[0] for s in SOLVERS} | {s[1] for s in SOLVERS}, text,
                         a.tasks.split(",") if merge else [], a.out)
    for task in a.tasks.split(","):
        rows = []
        for name, conf, extra in chosen:
            over = extra.get("*", []) + extra.get(task, [])
            row = run_cell(compose([*base, f"task={task}", f"solver={conf}", *over]))
            vals = [f"{row.get(c, float('nan')):.4g}" for c in COLS]
            rows.append([name, " ".join(over) or "—", *vals])
            print(task, name, vals, flush=True)
        lines += [f"## {task}", "", markdown_table(["solver", "overrides", *COLS], rows)]
        text = merge_rows(text, task, rows) if merge else text
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text if merge else "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
