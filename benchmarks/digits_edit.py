"""Class edits on the latent digits prior: held-out 3s regenerated as 8s (results/digits_edit.md and its grid).

    OMP_NUM_THREADS=1 python benchmarks/digits_edit.py [--images 16]

Each cell is `python run.py +experiment=digits_edit solver=<editor> <overrides>`: source condition = the
image's class ("3"), target = "8", the model's CFG 2.0, 50 steps. Scores: target_acc (the digits
classifier calls the edit an 8), target_prob (its softmax for 8), and PSNR/SSIM against the source
image (fidelity). `strength` < 1 inverts only part of the way (more of the source survives). The last
rows edit a corrupted source (task=edit_sr4: ×4 average pooling + σ_y = 0.05): restore with STSL
(the config's λ = 1, as in the latent table's SR row), then edit with BDIA.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.digits_solvers import run_table  # noqa: E402
from data.digits import digits_tensors  # noqa: E402
from metrics.edit import edit_scores, load_classifier  # noqa: E402

EDITORS = [
    ("no edit: BDIA round trip (target = source 3)", "bdia", ["task.target=3"], {}),
    ("DDIM inversion", "ddim_inversion", [], {}),
    ("DDIM inversion, strength 0.6", "ddim_inversion", ["solver.strength=0.6"], {}),
    ("EDICT", "edict", [], {}),
    ("EDICT, strength 0.8 (official)", "edict", ["solver.strength=0.8"], {}),
    ("BDIA (γ=0.94)", "bdia", ["solver.gamma=0.94"], {}),
    ("BDIA (γ=0.94), strength 0.6", "bdia", ["solver.gamma=0.94", "solver.strength=0.6"], {}),
    ("null-text inversion (prompt swap)", "null_text", [], {}),
    ("SR×4 source: STSL restore, then BDIA edit", "stsl_edit", ["task=edit_sr4"], {}),
    ("SR×4 source: STSL restore, then BDIA edit, strength 0.6", "stsl_edit",
     ["task=edit_sr4", "solver.edit.strength=0.6"], {}),
]
COLS = ["target_acc", "target_prob", "psnr", "ssim", "nfe", "vjp", "sec_per_sample"]


def main():
    ap = argparse.ArgumentParser(description="Class edits 3 -> 8 on the latent digits prior; writes only where told.")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--out", default="results/digits_edit.md", help="markdown table; its grid goes next to it")
    ap.add_argument("--root", default="results/runs/digits_edit", help="run folders (leaderboard.csv inside)")
    a = ap.parse_args()
    stem, out = "digits_edit", Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = ["+experiment=digits_edit", f"dataset.n={a.images}", "run.progress=false", f"run.root={a.root}",
            f"run.leaderboard={a.root}/leaderboard.csv"]
    x, labels = digits_tensors("test")
    threes = x[labels == 3][: a.images]
    before = edit_scores(load_classifier("models.digits_classifier:logits"), threes, 8)["target_acc"].mean().item()
    title = ["# Class edits on the latent digits prior: 3 → 8", "",
             f"`OMP_NUM_THREADS=1 python benchmarks/digits_edit.py --images {a.images}` — each cell is "
             f"`python run.py {base[0]} dataset.n={a.images} solver=<editor> <overrides>` (the first {a.images} held-out "
             "3s; source condition = class 3, target = class 8, the model's CFG 2.0 so 2 NFE per evaluation, 50 steps). "
             "target_acc: fraction the digits classifier calls an 8 (the unedited 3s: "
             f"{before:.2f}); psnr/ssim: fidelity to the source 3. CPU, one thread, shared cores.", ""]
    lines = run_table(base, EDITORS, title, stem, COLS, tasks=["edit"], out_dir=str(out.parent))
    # the grid's measurement row is that of the last cell: the SR×4 source of the last two rows
    lines = [ln.replace("rows: truth, measurement,", "rows: the source, the SR×4 measurement (input of the last two "
                        "rows; the others edit the source itself),") for ln in lines]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
