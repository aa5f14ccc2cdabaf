"""Exact-posterior metrics: how far a solver's samples for one y are from the true p(x0 | y).

sw2       sliced Wasserstein-2 between the solver's N samples and M exact posterior samples
sw2_floor the same distance for N exact samples: what a perfect sampler scores at this N, M
mean_err  RMS (per pixel, [-1,1] scale) error of the solver's sample mean against the exact mean
mean_err_floor  √(tr Cov / (d N)): the expected mean_err of N exact samples
"""
from __future__ import annotations

import math

import torch

from core.rng import generator


def sliced_w2(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """SW2 = (mean over unit directions θ of W2²(θᵀa, θᵀb))^½ for point sets a [n,d], b [m,d]."""
    return _w2_sorted(_sorted_projections(a, directions), _sorted_projections(b, directions))


def _sorted_projections(a: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return torch.sort(a.double() @ directions.T, dim=0).values


def _w2_sorted(pa: torch.Tensor, pb: torch.Tensor) -> float:
    """1-D W2 between empirical measures is exact: both quantile functions are evaluated on a grid
    of lcm(n, m) midpoints (capped at 2¹⁶), on which both are piecewise constant."""
    n, m = len(pa), len(pb)
    grid = min(n * m // math.gcd(n, m), 1 << 16)
    u = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    qa, qb = pa[(u * n).long()], pb[(u * m).long()]
    return float((qa - qb).square().mean().sqrt())


def random_directions(d: int, n: int, *seed) -> torch.Tensor:
    v = torch.randn(n, d, generator=generator("sw2-directions", *seed), dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def posterior_metrics(samples: torch.Tensor, posterior, image_id, *, n_ref: int = 2048,
                      n_directions: int = 256) -> dict:
    """Compare N solver samples of one measurement with its exact posterior (seeded by the image id)."""
    x = samples.flatten(1).double().cpu()
    n, d = x.shape
    dirs = random_directions(d, n_directions, image_id)
    ref = _sorted_projections(posterior.sample(n_ref, generator("posterior-reference", image_id)), dirs)
    exact_n = posterior.sample(n, generator("posterior-floor", image_id))
    tr = max(float(posterior.covariance.diagonal().sum()), 0.0)  # noiseless, full-rank A: zero up to round-off
    out = {
        "mean_err": float((x.mean(0) - posterior.mean).square().mean().sqrt()),
        "mean_err_floor": math.sqrt(tr / (d * n)),
        "post_std": math.sqrt(tr / d),
    }
    if n > 1:
        out["sw2"] = _w2_sorted(_sorted_projections(x, dirs), ref)
        out["sw2_floor"] = _w2_sorted(_sorted_projections(exact_n, dirs), ref)
    return out
