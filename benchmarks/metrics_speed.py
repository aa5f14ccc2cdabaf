"""Metric time per image vs solver time per image on the CPU (metrics must never dominate a run).

    OMP_NUM_THREADS=1 python benchmarks/metrics_speed.py [--images 8] [--samples 8] [--steps 100]

Solver: DPS on box inpainting in the GMM world. Metrics: PSNR/SSIM + best-of-N bookkeeping
(score_image), exact-posterior metrics, LPIPS VGG+AlexNet (random backbones: same cost as trained
ones) at 64 px and at 256 px, and the per-set FID/KID maths on 2048-d features.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.cli import compose  # noqa: E402
from harness.build import build_cell  # noqa: E402
from harness.scoring import score_image  # noqa: E402
from metrics import fid as fidlib  # noqa: E402
from metrics.lpips import LPIPS  # noqa: E402
from core.rng import generator  # noqa: E402


def clock(fn, repeat=1):
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t) / repeat, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    a = ap.parse_args()
    B, N = a.images, a.samples
    cfg = compose(["dataset=gmm", "model=gmm", "solver=dps", f"solver.steps={a.steps}", f"dataset.n={B}",
                   f"run.num_samples={N}", "compute.device=cpu"])
    cell = build_cell(cfg)
    ids = list(cell.dataset.ids)
    x, _ = cell.dataset.batch(ids)
    bound = cell.task.bind(cell.task.draw(ids, 0))
    y = bound.measure(x, [generator(0, "y", i) for i in ids])
    gens = [generator(0, "solver", i, r) for i in ids for r in range(N)]
    t_solve, x_hat = clock(lambda: cell.solver.solve(cell.prior, bound.repeat(N), y.repeat_interleave(N, 0), gens))
    x_hat = x_hat.detach().reshape(B, N, *x.shape[1:])
    res = {"solver (DPS %d steps, %d samples)" % (a.steps, N): t_solve / B}
    res["psnr+ssim+best-of-N"] = clock(lambda: [score_image(x_hat[j], x[j]) for j in range(B)])[0] / B
    post = [cell.prior.posterior(bound.index([j]), y[j: j + 1]) for j in range(B)]
    res["exact-posterior metrics (n_ref 2048)"] = clock(
        lambda: [score_image(x_hat[j], x[j], post[j], ids[j], 2048) for j in range(B)])[0] / B
    lp = LPIPS(("vgg", "alex"), random_backbone=True, min_size=64)
    flat, ref = x_hat.flatten(0, 1), x.repeat_interleave(N, 0)
    res["LPIPS vgg+alex, 16->64 px, all N samples"] = clock(lambda: lp(flat, ref))[0] / B
    big = torch.nn.functional.interpolate(flat[:N], size=256)
    res["LPIPS vgg+alex, 256 px, N samples (one image)"] = clock(lambda: lp(big, big.flip(0)))[0]
    f = torch.randn(1000, 2048, generator=torch.Generator().manual_seed(0)).double().numpy()
    res["FID + KID maths, 1000 x 2048-d (per set)"] = clock(
        lambda: (fidlib.frechet_distance(*fidlib.stats(f), *fidlib.stats(f[::-1] + 0.1)), fidlib.kid(f, f + 0.1)))[0]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {B} images x {N} samples")
    from harness.report import markdown_table

    first = res[next(iter(res))]
    print(markdown_table(["what", "seconds per image (per set for FID/KID)", "vs solver"],
                         [[k, f"{v:.4g}", f"{v / first:.2%}"] for k, v in res.items()]), end="")


if __name__ == "__main__":
    main()
