"""Every pixel solver on the exact GMM world (inpaint_box, sr4, deblur_gauss_circ): results/gmm_solvers.md.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/gmm_solvers.py

Each cell is `python run.py dataset=gmm model=gmm run.num_samples=16 dataset.n=8 metrics.n_ref=512 task=T solver=S
[extra]` composed with harness.cli.compose and run with harness.runner.run_cell; rows go to
results/gmm_leaderboard.csv. metrics.n_ref=512 (not 2048) keeps the exact-posterior metrics under 1 s per image.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cli import compose  # noqa: E402
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
BASE = ["dataset=gmm", "model=gmm", "run.num_samples=16", "dataset.n=8", "metrics.n_ref=512",
        "run.root=results/runs", "run.leaderboard=results/gmm_leaderboard.csv", "run.progress=false"]
COLS = ["sw2", "sw2_floor", "mean_err", "mean_err_floor", "psnr", "nfe", "vjp", "sec_per_sample"]


def main():
    lines = ["# Solvers on the exact GMM world (16×16 digits mixture, σ_y = 0.05 on [-1,1])", "",
             "Command: `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/gmm_solvers.py` — each cell is",
             f"`python run.py {' '.join(BASE)} task=<task> solver=<solver> [overrides]`", "",
             "8 images × 16 samples per cell; mean over images. CPU (2 shared cores), float32. "
             "sw2 / mean_err against the exact posterior; *_floor is what exact samples score at the same N.", ""]
    for task in TASKS:
        lines += [f"## {task}", "", "| solver | overrides | " + " | ".join(COLS) + " |",
                  "|---|---|" + "---|" * len(COLS)]
        for name, conf, extra in SOLVERS:
            over = extra.get("*", []) + extra.get(task, [])
            row = run_cell(compose([*BASE, f"task={task}", f"solver={conf}", *over]))
            vals = [f"{row.get(c, float('nan')):.4g}" for c in COLS]
            lines.append(f"| {name} | {' '.join(over) or '—'} | " + " | ".join(vals) + " |")
            print(task, name, vals, flush=True)
        lines.append("")
    Path("results/gmm_solvers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
