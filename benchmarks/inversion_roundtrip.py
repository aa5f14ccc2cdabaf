"""Round-trip table of the exact-inversion methods on the exact GMM prior (pixel space = the state).

    python benchmarks/inversion_roundtrip.py [--images 8] [--out results/inversion_roundtrip.md]

For each method, step count and dtype: relative L2 error ‖x̂ − x‖/‖x‖ of invert-then-regenerate, the
max absolute error, and NFE per image for the whole round trip (counted by the prior).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import solvers.bdia as bdia  # noqa: E402
import solvers.ddim_inversion as ddim_inv  # noqa: E402
import solvers.edict as edict  # noqa: E402
from models.gmm import digits_gmm  # noqa: E402
from tasks.rng import generators  # noqa: E402

METHODS = {
    "DDIM inversion": lambda p, x, s: ddim_inv.generate(p, ddim_inv.invert(p, x, steps=s), steps=s),
    "EDICT (p=0.93)": lambda p, x, s: edict.generate(p, *edict.invert(p, x, x.clone(), steps=s), steps=s)[0],
    "BDIA-DDIM (γ=1.0)": lambda p, x, s: bdia.generate(p, *bdia.invert(p, x, steps=s, gamma=1.0), steps=s, gamma=1.0),
    "BDIA-DDIM (γ=0.94)": lambda p, x, s: bdia.generate(p, *bdia.invert(p, x, steps=s, gamma=0.94), steps=s, gamma=0.94),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    prior = digits_gmm()
    truth = prior.sample_prior(generators(range(a.images), "inversion-table")).double()
    lines = ["| method | steps | dtype | rel. L2 error | max abs error | NFE per image |", "|---|---|---|---|---|---|"]
    for name, fn in METHODS.items():
        for steps in (10, 50):
            for dtype in (torch.float64, torch.float32):
                x = truth.to(dtype)
                prior.cost.reset()
                back = fn(prior, x, steps).double()
                err = ((back - truth).norm() / truth.norm()).item()
                lines.append(f"| {name} | {steps} | {str(dtype)[6:]} | {err:.2e} | {(back - truth).abs().max().item():.2e} "
                             f"| {prior.cost.nfe / a.images:.0f} |")
    text = (f"`python benchmarks/inversion_roundtrip.py --images {a.images}` — exact GMM prior (1×16×16), "
            "invert then regenerate.\n\n" + "\n".join(lines) + "\n")
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
