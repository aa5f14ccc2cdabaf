"""Harness overhead: a DPS run through the harness vs the same network calls and backward passes, bare.

    python benchmarks/overhead.py [--world gmm|digits] [--steps 200] [--images 8] [--samples 8] [--repeats 3]

Both sides run on the same prior: `gmm` (the exact prior, whose 'network' is a cheap closed form, so
any overhead of solver bookkeeping, per-sample RNG, counting and recording shows up at full size) or
`digits` (the shipped 1.1 M-parameter UNet: a real network). Reported:
  solve / bare  - DPS.solve alone vs S forward+backward calls on the same batch
  cell / bare   - a whole run_cell (measure, solve, score PSNR/SSIM, write rows, grid, leaderboard)
                  vs the same bare calls; `cell+post` adds the exact-posterior metrics (an
                  evaluation cost of the GMM world: posterior, 2048 reference samples, sliced W2)
Times are the minimum over repeats (seconds).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from harness.cli import compose  # noqa: E402
from harness.runner import run_cell  # noqa: E402
from models.gmm import digits_gmm  # noqa: E402
from core.rng import randn  # noqa: E402
from solvers.common import timesteps  # noqa: E402
from solvers.dps import DPS  # noqa: E402
from tasks.inpaint import BoxInpainting  # noqa: E402
from core.rng import generators  # noqa: E402


def bare(prior, batch: int, steps: int) -> float:
    """S network evaluations, each followed by one backward pass to the input: nothing else."""
    x = torch.randn(batch, *prior.state_shape)
    v = torch.randn_like(x)
    t0 = time.perf_counter()
    for t in timesteps(prior.T, steps):
        xi = x.detach().requires_grad_(True)
        out = prior.network(xi, torch.full((batch,), t))
        torch.autograd.grad(out, xi, grad_outputs=v)
    return time.perf_counter() - t0


def solve(prior, batch: int, steps: int) -> float:
    task = BoxInpainting(prior.image_shape, {"sigma": 0.05})
    bound = task.bind(task.draw(range(batch), 0))
    x = randn(generators(range(batch), "x"), prior.image_shape).clamp(-1, 1)  # any images do for timing
    y = bound.measure(x, generators(range(batch), "n"))
    t0 = time.perf_counter()
    DPS(steps=steps).solve(prior, bound, y, generators(range(batch), "s"))
    return time.perf_counter() - t0


def cell(world: str, images: int, samples: int, steps: int, posterior: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"dataset.n={images}", f"run.num_samples={samples}", f"solver.steps={steps}",
                       "solver=dps", "task=inpaint_box", f"dataset={world}", f"model={world}", "compute.device=cpu",
                       f"compute.batch_size={images * samples}", "run.progress=false", f"run.root={tmp}/runs",
                       f"run.leaderboard={tmp}/lb.csv", f"run.cache={tmp}/cache",
                       f"metrics.posterior={'auto' if posterior else 'false'}"])
        t0 = time.perf_counter()
        run_cell(cfg)
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", choices=("gmm", "digits"), default="gmm")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.world == "gmm":
        prior = digits_gmm()
    else:
        from models.diffusers_pixel import DiffusersPixelPrior
        prior = DiffusersPixelPrior(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 "models", "weights", "digits_pixel"))
    batch = a.images * a.samples
    bare(prior, batch, 5), solve(prior, batch, 5)  # warm-up
    tb = min(bare(prior, batch, a.steps) for _ in range(a.repeats))
    ts = min(solve(prior, batch, a.steps) for _ in range(a.repeats))
    tc = min(cell(a.world, a.images, a.samples, a.steps, False) for _ in range(a.repeats))
    tp = min(cell(a.world, a.images, a.samples, a.steps, True) for _ in range(a.repeats)) if a.world == "gmm" else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {batch}, {a.steps} steps ({a.world} prior, CPU)")
    print(f"bare       {tb:.3f} s\nsolve      {ts:.3f} s   solve/bare     {ts / tb:.3f}\n"
          f"cell       {tc:.3f} s   cell/bare      {tc / tb:.3f}"
          + (f"\ncell+post  {tp:.3f} s   cell+post/bare {tp / tb:.3f}" if tp is not None else ""))


if __name__ == "__main__":
    main()
