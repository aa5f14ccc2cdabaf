"""Plain DDIM inversion (Song et al. 2021; as used by prompt-to-prompt / null-text inversion).

Levels 0 (clean) .. S (noisiest). Inversion walks up with the network evaluated at the *current,
less noisy* state and the *next* label:  z_{i+1} = DDIM_{i→i+1}(z_i; ε̂(z_i, t_{i+1})).
Generation walks down with DDIM (η = 0): z_{i-1} = DDIM_{i→i-1}(z_i; ε̂(z_i, t_i)).
The approximation ε̂(z_{i+1}, t_{i+1}) ≈ ε̂(z_i, t_{i+1}) makes the round trip inexact; EDICT and
BDIA remove it. 1 NFE per step each way, no VJP.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_jump, levels


@torch.no_grad()
def invert(prior, z0, cond=None, steps: int = 50, spacing: str = "adm") -> torch.Tensor:
    ts = levels(prior.T, steps, spacing)
    z = z0
    for i in range(steps):
        eps = prior.eps(z, ts[i + 1], cond)
        z = ddim_jump(z, eps, prior.abar(ts[i], z), prior.abar(ts[i + 1], z))
    return z


@torch.no_grad()
def generate(prior, zT, cond=None, steps: int = 50, spacing: str = "adm") -> torch.Tensor:
    ts = levels(prior.T, steps, spacing)
    z = zT
    for i in range(steps, 0, -1):
        eps = prior.eps(z, ts[i], cond)
        z = ddim_jump(z, eps, prior.abar(ts[i], z), prior.abar(ts[i - 1], z))
    return z


class DDIMInversion(Solver):
    """Round trip on the `inversion` task: encode, invert to level S, regenerate, decode."""

    name = "ddim_inversion"

    def __init__(self, steps: int = 50, spacing: str = "adm"):
        self.steps, self.spacing = int(steps), spacing

    def solve(self, prior, task, y, gens, cond=None):
        zT = invert(prior, prior.encode(y), cond, self.steps, self.spacing)
        return prior.decode(generate(prior, zT, cond, self.steps, self.spacing))
