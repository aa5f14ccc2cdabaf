"""Unconditional DDIM (Song, Meng, Ermon, ICLR 2021): the prior alone, ignoring y. η=0 is the ODE."""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, pairs, sample_noise, timesteps


class DDIM(Solver):
    name = "ddim"

    def __init__(self, steps: int = 50, eta: float = 0.0, spacing: str = "adm"):
        self.steps, self.eta, self.spacing = int(steps), float(eta), spacing

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            eps, x0 = prior.predict(x, t, cond)
            noise = sample_noise(gens, x) if self.eta > 0 and s >= 0 else None
            x = ddim_step(x, eps, x0, prior.abar(t, x), prior.abar(s, x), self.eta, noise)
        return prior.decode(x)
