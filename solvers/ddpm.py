"""Unconditional DDPM ancestral sampling (Ho et al. 2020) on a respaced grid (Nichol & Dhariwal 2021)."""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import VARIANCES, check_variance, ddpm_step, learned_variance_channels, pairs, sample_noise, timesteps
from core.errors import ConfigError


class DDPM(Solver):
    name = "ddpm"

    def __init__(self, steps: int = 1000, variance: str = "fixed_small", spacing: str = "adm"):
        if variance not in VARIANCES:
            raise ConfigError(f"DDPM variance must be one of {VARIANCES}, not {variance!r}; set solver.variance.")
        self.steps, self.variance, self.spacing = int(steps), variance, spacing

    def check(self, prior, task):
        super().check(prior, task)
        check_variance(self.variance, prior)

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            _, x0 = prior.predict(x, t, cond)
            noise = sample_noise(gens, x) if s >= 0 else None
            raw = learned_variance_channels(prior) if self.variance == "learned" else None
            x = ddpm_step(x, x0, prior.abar(t, x), prior.abar(s, x), noise, self.variance, raw)
        return prior.decode(x)
