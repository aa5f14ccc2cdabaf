"""Every pixel solver on the digits world (the shipped DDPM, held-out digits): results/digits_solvers.md
and one comparison grid per task, results/digits_solvers_<task>.png (rows: truth, measurement, then one
row per solver, in the table's order).

    OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py [--images 8]

Each cell is `python run.py dataset=digits model=digits dataset.n=N task=T solver=S [overrides]`
(composed with harness.cli.compose, run with harness.runner.run_cell) with each solver's default
configuration, except the DAPS budget (50 levels × 2 ODE steps × 50 Langevin steps, not 200×5×100).
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
from harness.runner import cell_config, run_cell  # noqa: E402
from metrics.image import to01  # noqa: E402

TASKS = ["inpaint_box", "sr4"]
SOLVERS = [("pinv", []), ("ddim", []), ("dps", []), ("dps_dsg", []), ("ddrm", []), ("pigdm", []), ("ddnm", []),
           ("ddnm_plus", []), ("reddiff", []), ("diffpir", []), ("freedom", []), ("mcg", []),
           ("daps", ["solver.annealing_steps=50", "solver.ode_steps=2", "solver.langevin_steps=50"])]
COLS = ["psnr", "ssim", "nfe", "vjp", "sec_per_sample"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    a = ap.parse_args()
    base = ["dataset=digits", "model=digits", f"dataset.n={a.images}", "run.num_samples=1", "run.progress=false",
            "run.root=results/runs/digits_solvers", "run.leaderboard=results/runs/digits_solvers/leaderboard.csv"]
    lines = ["# Pixel solvers on the digits world (shipped 1×16×16 DDPM, held-out test digits, σ_y = 0.05 on [-1,1])",
             "", f"`OMP_NUM_THREADS=1 python benchmarks/digits_solvers.py --images {a.images}` — each cell is "
             f"`python run.py {' '.join(base[:3])} task=<task> solver=<solver>` with the solver's defaults "
             "(DAPS: 50×2 levels/ODE steps, 50 Langevin steps). CPU, 2 cores shared with other jobs when measured.", ""]
    for task in TASKS:
        lines += [f"## {task}", "", "| solver | " + " | ".join(COLS) + " |", "|---|" + "---|" * len(COLS)]
        rows = []
        for name, over in SOLVERS:
            cfg = compose([*base, f"task={task}", f"solver={name}", *over])
            s = run_cell(cfg)
            lines.append(f"| {name} | " + " | ".join(f"{s.get(c, float('nan')):.4g}" for c in COLS) + " |")
            rows.append(torch.stack(list(RunDir(cfg.run.root, s["run"]).reconstructions().values())))
            print(task, name, [f"{s.get(c, float('nan')):.4g}" for c in COLS], flush=True)
        from harness.build import build_cell  # the truths and measurements the cells saw
        cell = build_cell(cfg)
        ids = cell.dataset.ids
        x, _ = cell.dataset.batch(ids)
        params, y, _ = MeasurementCache(cfg.run.cache, cell_config(cfg)["task"], cell.dataset.describe(),
                                        int(cfg.seed)).measure(cell.task, x, ids)
        grid = torch.cat([x, cell.task.bind(params).display(y), *[r[: len(ids)] for r in rows]])
        grid = torch.nn.functional.interpolate(to01(torch.nan_to_num(grid)), scale_factor=3, mode="nearest")
        torchvision.utils.save_image(grid, f"results/digits_solvers_{task}.png", nrow=len(ids), padding=2, pad_value=1)
        lines += ["", f"![{task}](digits_solvers_{task}.png) rows: truth, measurement, then "
                  + ", ".join(n for n, _ in SOLVERS), ""]
    Path("results/digits_solvers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
