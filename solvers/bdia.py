"""BDIA-DDIM — exact inversion by bi-directional integration approximation (Zhang, Lewis, Kleijn; ECCV 2024).

Levels 0 (clean) .. S (noisiest); ε̂_i = ε̂(z_i, t_i), one network evaluation per step.

    sampling   z_{i-1} = γ z_{i+1} − γ DDIM_{i→i+1}(z_i) + DDIM_{i→i-1}(z_i)
    inversion  z_{i+1} = (z_{i-1} − DDIM_{i→i-1}(z_i)) / γ + DDIM_{i→i+1}(z_i)

Each update is linear in (z_{i+1}, z_i) given ε̂_i, so inversion is exact up to floating point
when the state is the *pair* (z_{i+1}, z_i). Start-up (official code): sampling from noise takes
one plain DDIM step z_S → z_{S-1}; inversion of z_0 takes one plain DDIM-inversion step z_0 → z_1
(network at z_0 with label t_1), and returns the pair (z_S, z_{S-1}) from which sampling
reproduces z_{S-2}, …, z_0 exactly. γ → 0 amplifies round-off (inversion divides by γ).

Editing (task=edit): invert with the source condition to the pair at level k = round(strength·S),
regenerate from that pair with the target condition (the official editing runs use γ = 0.94).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, edit_target, inversion_level, inversion_top, levels
from core.errors import ConfigError
from core.rng import randn


def _step(prior, z_next, z_i, i, ts, gamma, cond):
    """BDIA sampling step at level i: from (z_{i+1}, z_i) to z_{i-1}."""
    a = lambda k: prior.abar(ts[k], z_i)  # noqa: E731
    eps = prior.eps(z_i, ts[i], cond)
    return gamma * (z_next - ddim_step(z_i, eps, None, a(i), a(i + 1))) + ddim_step(z_i, eps, None, a(i), a(i - 1))


@torch.no_grad()
def invert(prior, z0, cond=None, steps: int = 50, gamma: float = 1.0, spacing: str = "adm", top: int | None = None):
    """z_0 → the pair (z_top, z_{top-1}) (top = S by default)."""
    ts = levels(prior.T, steps, spacing)
    a = lambda k: prior.abar(ts[k], z0)  # noqa: E731
    z_prev, z = z0, ddim_step(z0, prior.eps(z0, ts[1], cond), None, a(0), a(1))
    for i in range(1, steps if top is None else top):
        eps = prior.eps(z, ts[i], cond)
        z_prev, z = z, (z_prev - ddim_step(z, eps, None, a(i), a(i - 1))) / gamma + ddim_step(z, eps, None, a(i), a(i + 1))
    return z, z_prev


@torch.no_grad()
def generate(prior, zS, z_below=None, cond=None, steps: int = 50, gamma: float = 1.0, spacing: str = "adm",
             top: int | None = None):
    """From the pair (z_top, z_{top-1}) of an inversion, or from noise z_S alone (plain first step), to z_0."""
    ts = levels(prior.T, steps, spacing)
    if z_below is None:
        a = lambda k: prior.abar(ts[k], zS)  # noqa: E731
        z_below = ddim_step(zS, prior.eps(zS, ts[steps], cond), None, a(steps), a(steps - 1))
    z_next, z = zS, z_below
    for i in range((steps if top is None else top) - 1, 0, -1):
        z_next, z = z, _step(prior, z_next, z, i, ts, gamma, cond)
    return z


class BDIA(Solver):
    """mode=roundtrip (the `inversion` task: encode, invert, regenerate, decode) or mode=sample (from noise)."""

    name = "bdia"
    edits = True

    def __init__(self, steps: int = 50, gamma: float = 1.0, mode: str = "roundtrip", strength: float = 1.0,
                 spacing: str = "adm",
                 cfg_scale: float | None = None):
        self.set_cfg_scale(cfg_scale)
        if not 0 < gamma <= 1:
            raise ConfigError(f"BDIA gamma must be in (0, 1], got {gamma}; set solver.gamma (inversion divides by it).")
        if mode not in ("roundtrip", "sample"):
            raise ConfigError(f"BDIA mode must be 'roundtrip' or 'sample', not {mode!r}; set solver.mode.")
        if steps < 2:
            raise ConfigError("BDIA needs at least 2 steps (its state is a pair of levels); set solver.steps >= 2.")
        self.steps, self.gamma, self.mode, self.spacing = int(steps), float(gamma), mode, spacing
        self.strength = float(strength)
        inversion_top(self.steps, self.strength)  # validates strength

    @property
    def needs(self) -> frozenset:
        return frozenset({"identity"} if self.mode == "roundtrip" else ())

    top = inversion_level  # derived from steps and strength, so not recorded as a parameter

    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(cond)
        if self.mode == "sample":
            zS = randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
            return prior.decode(generate(prior, zS, None, cond, self.steps, self.gamma, self.spacing))
        args = (self.steps, self.gamma, self.spacing, self.top)
        zS, z_below = invert(prior, prior.encode(y), cond, *args)
        return prior.decode(generate(prior, zS, z_below, edit_target(prior, task, cond), *args))
