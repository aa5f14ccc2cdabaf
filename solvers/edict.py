"""EDICT — exact inversion with coupled transformations (Wallace, Gokul, Naik; CVPR 2023).

Two chains (x, y). A denoising step t → s (s less noisy), with a = √(ᾱ_s/ᾱ_t) and
b = √(1−ᾱ_s) − √(ᾱ_s(1−ᾱ_t)/ᾱ_t) (so that a·z + b·ε̂ is the DDIM step):

    x' = a x + b ε̂(y, t)
    y' = a y + b ε̂(x', t)
    x_s = p x' + (1−p) y'
    y_s = p y' + (1−p) x_s

Inversion applies the algebraic inverses in reverse order. With `leapfrog` the chains swap roles
after every step (as the official code's default). 2 NFE per step, no VJP; p = 0.93 by default.

Editing (task=edit, the official `EDICT_editing`): invert both chains with the source condition up to
level k = round(strength·S) (official init_image_strength 0.8), regenerate from k with the target.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import edit_target, inversion_level, inversion_top, levels
from core.errors import ConfigError


def _coefficients(prior, t, s, like):
    a_t, a_s = prior.abar(t, like), prior.abar(s, like)
    return (a_s / a_t).sqrt(), (1 - a_s).sqrt() - (a_s * (1 - a_t) / a_t).sqrt()


@torch.no_grad()
def generate(prior, x, y, cond=None, steps: int = 50, p: float = 0.93, leapfrog: bool = True, spacing="adm",
             top: int | None = None):
    """Both chains from level `top` (default S) to 0; the leapfrog parity counts from level S."""
    ts = levels(prior.T, steps, spacing)
    top = steps if top is None else top
    for i in range(top, 0, -1):
        k = steps - i
        if leapfrog and k % 2:
            x, y = y, x
        a, b = _coefficients(prior, ts[i], ts[i - 1], x)
        x1 = a * x + b * prior.eps(y, ts[i], cond)
        y1 = a * y + b * prior.eps(x1, ts[i], cond)
        x = p * x1 + (1 - p) * y1
        y = p * y1 + (1 - p) * x
        if leapfrog and k % 2:
            x, y = y, x
    return x, y


@torch.no_grad()
def invert(prior, x, y, cond=None, steps: int = 50, p: float = 0.93, leapfrog: bool = True, spacing="adm",
           top: int | None = None):
    """Both chains from level 0 to `top` (default S)."""
    ts = levels(prior.T, steps, spacing)
    for i in range(1, (steps if top is None else top) + 1):
        k = steps - i  # the index of this step in `generate`, for the leapfrog parity
        if leapfrog and k % 2:
            x, y = y, x
        a, b = _coefficients(prior, ts[i], ts[i - 1], x)
        y1 = (y - (1 - p) * x) / p
        x1 = (x - (1 - p) * y1) / p
        y = (y1 - b * prior.eps(x1, ts[i], cond)) / a
        x = (x1 - b * prior.eps(y, ts[i], cond)) / a
        if leapfrog and k % 2:
            x, y = y, x
    return x, y


class EDICT(Solver):
    """Round trip (task=inversion) or edit (task=edit): encode, invert both chains, regenerate, decode chain x."""

    name = "edict"
    edits = True
    needs = frozenset({"identity"})

    def __init__(self, steps: int = 50, p: float = 0.93, leapfrog: bool = True, strength: float = 1.0,
                 spacing: str = "adm",
                 cfg_scale: float | None = None):
        self.set_cfg_scale(cfg_scale)
        if not 0 < p <= 1:
            raise ConfigError(f"EDICT mixing weight p must be in (0, 1], got {p}; set solver.p.")
        self.steps, self.p, self.leapfrog, self.spacing = int(steps), float(p), bool(leapfrog), spacing
        self.strength = float(strength)
        inversion_top(self.steps, self.strength)  # validates strength

    top = inversion_level  # derived from steps and strength, so not recorded as a parameter

    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(cond)
        z = prior.encode(y)
        args = (self.steps, self.p, self.leapfrog, self.spacing, self.top)
        xT, yT = invert(prior, z, z.clone(), cond, *args)
        x0, _ = generate(prior, xT, yT, edit_target(prior, task, cond), *args)
        return prior.decode(x0)
