"""Plain DDIM inversion (Song et al. 2021; as used by prompt-to-prompt / null-text inversion).

Levels 0 (clean) .. S (noisiest). Inversion walks up with the network evaluated at the *current,
less noisy* state and the *next* label:  z_{i+1} = DDIM_{i→i+1}(z_i; ε̂(z_i, t_{i+1})).
Generation walks down with DDIM (η = 0): z_{i-1} = DDIM_{i→i-1}(z_i; ε̂(z_i, t_i)).
The approximation ε̂(z_{i+1}, t_{i+1}) ≈ ε̂(z_i, t_{i+1}) makes the round trip inexact; EDICT and
BDIA remove it. 1 NFE per step each way, no VJP.

Editing (task=edit): invert with the source condition up to level k = round(strength·S), regenerate
from level k with the target condition (strength < 1 keeps more of the source, SDEdit-style).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, edit_target, inversion_level, inversion_top, levels


@torch.no_grad()
def invert(prior, z0, cond=None, steps: int = 50, spacing: str = "adm", top: int | None = None) -> torch.Tensor:
    """z_0 → z_top (top = steps by default)."""
    ts = levels(prior.T, steps, spacing)
    z = z0
    for i in range(steps if top is None else top):
        eps = prior.eps(z, ts[i + 1], cond)
        z = ddim_step(z, eps, None, prior.abar(ts[i], z), prior.abar(ts[i + 1], z))
    return z


@torch.no_grad()
def generate(prior, zT, cond=None, steps: int = 50, spacing: str = "adm", top: int | None = None) -> torch.Tensor:
    """z_top → z_0."""
    ts = levels(prior.T, steps, spacing)
    z = zT
    for i in range(steps if top is None else top, 0, -1):
        eps = prior.eps(z, ts[i], cond)
        z = ddim_step(z, eps, None, prior.abar(ts[i], z), prior.abar(ts[i - 1], z))
    return z


class DDIMInversion(Solver):
    """Round trip (task=inversion) or edit (task=edit): encode, invert, regenerate, decode."""

    name = "ddim_inversion"
    edits = True
    needs = frozenset({"identity"})

    def __init__(self, steps: int = 50, strength: float = 1.0, spacing: str = "adm",
                 cfg_scale: float | None = None):
        self.set_cfg_scale(cfg_scale)
        self.steps, self.strength, self.spacing = int(steps), float(strength), spacing
        inversion_top(self.steps, self.strength)  # validates strength

    top = inversion_level  # derived from steps and strength, so not recorded as a parameter

    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(cond)
        zT = invert(prior, prior.encode(y), cond, self.steps, self.spacing, self.top)
        return prior.decode(generate(prior, zT, edit_target(prior, task, cond), self.steps, self.spacing, self.top))
