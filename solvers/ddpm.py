"""Unconditional DDPM ancestral sampling (Ho et al. 2020) on a respaced grid (Nichol & Dhariwal 2021)."""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddpm_step, pairs, sample_noise, timesteps
from tasks.errors import ConfigError


class DDPM(Solver):
    name = "ddpm"

    def __init__(self, steps: int = 1000, variance: str = "small", spacing: str = "adm"):
        if variance not in ("small", "large"):
            raise ConfigError(f"DDPM variance must be 'small' or 'large', not {variance!r}; set solver.variance.")
        self.steps, self.variance, self.spacing = int(steps), variance, spacing

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            _, x0 = prior.predict(x, t, cond)
            noise = sample_noise(gens, x) if s >= 0 else None
            x = ddpm_step(x, x0, prior.abar(t, x), prior.abar(s, x), noise, self.variance)
        return prior.decode(x)
