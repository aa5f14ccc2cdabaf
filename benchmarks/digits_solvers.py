"""Every solver of a digits world on held-out digits: a markdown table and one comparison grid per task
(rows: truth, measurement, then one row per solver, in the table's order).

    OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py [--images 8]            # pixel DDPM (model=digits)
    OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py --latent [--images 8]   # latent solvers (model=digits_latent)
    OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py --solvers daps [--root DIR] # only those rows, merged

With --solvers (names or configs, comma-separated) and an existing --out, only those rows are replaced in it
(benchmarks/gmm_solvers.merge_rows); the other rows, the text around the tables and the grid images are kept
(grids are drawn only by a full run). Run names do not change with code: give a fresh --root to recompute.

Each cell is `python run.py dataset=digits model=<model> dataset.n=N task=T solver=S [overrides]`
(composed with harness.cli.compose, run with harness.runner.run_cell). Pixel world: each solver's
default configuration, except the DAPS budget (50 levels × 2 ODE steps × 50 Langevin steps). Latent
world: unconditional (run.prompt=null: the measurement-only baseline pinv gets no class label, so
neither do the solvers) with CPU budgets and step sizes for this 16-px world listed in LATENT below
(paper defaults are for Stable Diffusion at 512²); pinv is the measurement-only baseline A⁺y.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torchvision  # noqa: E402

from harness.cache import MeasurementCache  # noqa: E402
from harness.cli import compose  # noqa: E402
from harness.records import RunDir  # noqa: E402
from harness.report import markdown_table  # noqa: E402
from harness.runner import cell_config, run_cell  # noqa: E402
from metrics.image import to01  # noqa: E402

TASKS = ["inpaint_box", "sr4"]
PIXEL = [("pinv", []), ("ddim", []), ("dps", []), ("dps_dsg", []), ("ddrm", []), ("pigdm", []), ("ddnm", []),
         ("ddnm_plus", []), ("reddiff", []), ("diffpir", []), ("freedom", []), ("mcg", []),
         ("daps", ["solver.annealing_steps=50", "solver.ode_steps=2", "solver.langevin_steps=50"])]
# (name shown, config, overrides, per-task overrides or None = not run on that task). CPU budgets (step and
# iteration counts) are fixed here; step sizes are either the configs' defaults or the values tuned on the
# *validation* digits (`+tuned=digits_latent_<task>_<solver>`: conf/tuned/, results/tuned_digits_latent.md),
# never chosen on the test digits this table reports.
def tuned(solver: str, *extra: str) -> dict:
    return {t: [f"+tuned=digits_latent_{t}_{solver}", *extra] for t in TASKS}


LATENT = [("pinv", "pinv", [], {}),
          ("ddim (prior only)", "ddim", [], {}),
          ("latent DPS (100 steps; tuned)", "dps", [], tuned("dps")),
          ("PSLD (100 steps; tuned)", "psld", [], tuned("psld")),
          ("ReSample (100 steps; tuned)", "resample", [], tuned("resample")),
          ("P2L (50 steps; tuned)", "p2l", [], tuned("p2l")),
          ("STSL (tuned)", "stsl", [], tuned("stsl")),
          ("STSL-biased (η=0; STSL's tuned λ)", "stsl", [], tuned("stsl", "solver.trace_weight=0")),
          ("Graikos et al. (tuned)", "graikos", [], tuned("graikos")),
          ("Graikos et al. (defaults: direction auto, the latent mask on inpainting)", "graikos", [], {}),
          ("LatentDAPS (25×2, 12 HMC; tuned)", "latent_daps", [], tuned("latent_daps"))]
COLS = ["psnr", "ssim", "nfe", "vjp", "decode_vjp", "sec_per_sample"]


def run_table(base: list, solvers: list, title: list, stem: str, cols=COLS, tasks=TASKS, out_dir: str = "results",
              tables: dict | None = None):
    """One cell per (task, solver); returns the markdown lines and writes <out_dir>/<stem>_<task>.png
    (with `tables`: fills it with {task: rows} and draws no grid)."""
    lines = title
    for task in tasks:
        lines += [f"## {task}", ""]
        rows, shown_rows, table = [], [], []
        for shown, name, over, per_task in solvers:
            if task in per_task and per_task[task] is None:
                continue
            cfg = compose([*base, f"task={task}", f"solver={name}", *over, *per_task.get(task, [])])
            shown_rows.append(shown)
            s = run_cell(cfg)
            table.append([shown, *(f"{s.get(c, float('nan')):.4g}" for c in cols)])
            rows.append(torch.stack(list(RunDir(cfg.run.root, s["run"]).reconstructions().values())))
            print(task, shown, [f"{s.get(c, float('nan')):.4g}" for c in cols], flush=True)
        lines.append(markdown_table(["solver", *cols], table).rstrip("\n"))
        if tables is not None:
            tables[task] = table
            continue
        from harness.build import build_cell  # the truths and measurements the cells saw
        cell = build_cell(cfg)
        ids = cell.dataset.ids
        x, _ = cell.dataset.batch(ids)
        params, y, _ = MeasurementCache(cfg.run.cache, cell_config(cfg)["task"], cell.dataset.describe(),
                                        int(cfg.seed)).measure(cell.task, x, ids)
        grid = torch.cat([x, cell.task.bind(params).display(y), *[r[: len(ids)] for r in rows]])
        grid = torch.nn.functional.interpolate(to01(torch.nan_to_num(grid)), scale_factor=3, mode="nearest")
        torchvision.utils.save_image(grid, str(Path(out_dir) / f"{stem}_{task}.png"), nrow=len(ids), padding=2, pad_value=1)
        lines += ["", f"![{task}]({stem}_{task}.png) rows: truth, measurement, then "
                  + ", ".join(shown_rows), ""]
    return lines


def main():
    ap = argparse.ArgumentParser(description="Every solver of a digits world; writes only where told.")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--latent", action="store_true", help="the latent solvers on model=digits_latent")
    ap.add_argument("--out", help="markdown table; its grids go next to it "
                                  "(default results/digits_solvers.md or results/digits_latent_solvers.md)")
    ap.add_argument("--root", help="run folders (default results/runs/<stem>; its leaderboard.csv inside)")
    ap.add_argument("--solvers", help="comma-separated names (shown name or config) to run and merge into --out")
    a = ap.parse_args()
    model, stem = ("digits_latent", "digits_latent_solvers") if a.latent else ("digits", "digits_solvers")
    out, root = Path(a.out or f"results/{stem}.md"), a.root or f"results/runs/{stem}"
    out.parent.mkdir(parents=True, exist_ok=True)
    base = ["dataset=digits", f"model={model}", f"dataset.n={a.images}", "run.num_samples=1", "run.progress=false",
            f"run.root={root}", f"run.leaderboard={root}/leaderboard.csv"]
    if a.latent:
        base.append("run.prompt=null")
        solvers = LATENT
        title = ["# Latent solvers on the latent digits world (shipped VAE + latent UNet, held-out test digits, "
                 "σ_y = 0.05 on [-1,1])", "", f"`OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py --latent "
                 f"--images {a.images}` — each cell is `python run.py {' '.join(base[:3])} run.prompt=null "
                 "task=<task> solver=<solver> <overrides>` (unconditional: no class label, like the measurement-only "
                 "baseline pinv = A⁺y). CPU budgets are in benchmarks/digits_solvers.py (LATENT); \"tuned\" rows take "
                 "their step sizes from conf/tuned/digits_latent_<task>_<solver>.yaml (6 trials on 4 validation "
                 "digits, results/tuned_digits_latent.md), never from these test digits. CPU, one thread, 2 cores "
                 "shared with other jobs when measured; `decode_vjp` = backward passes through the VAE decoder.", ""]
    else:
        solvers = [(n, n, o, {}) for n, o in PIXEL]
        title = ["# Pixel solvers on the digits world (shipped 1×16×16 DDPM, held-out test digits, σ_y = 0.05 on [-1,1])",
                 "", f"`OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py --images {a.images}` — each cell is "
                 f"`python run.py {' '.join(base[:3])} task=<task> solver=<solver>` with the solver's defaults "
                 "(DAPS: 50×2 levels/ODE steps, 50 Langevin steps). CPU, 2 cores shared with other jobs when measured.", ""]
    cols = COLS if a.latent else COLS[:4] + COLS[5:]
    if a.solvers is None:
        out.write_text("\n".join(run_table(base, solvers, title, stem, cols, out_dir=str(out.parent))) + "\n")
        return
    from benchmarks.gmm_solvers import merge_rows, refuse_bad_merge

    names = set(a.solvers.split(","))
    chosen = [s for s in solvers if s[0] in names or s[1] in names]
    text = out.read_text() if out.exists() else ""
    refuse_bad_merge(names, {s[0] for s in solvers} | {s[1] for s in solvers}, text, TASKS, out)
    tables: dict = {}
    run_table(base, chosen, [], stem, cols, out_dir=str(out.parent), tables=tables)
    for task, rows in tables.items():
        text = merge_rows(text, task, rows)
    out.write_text(text)


if __name__ == "__main__":
    main()
