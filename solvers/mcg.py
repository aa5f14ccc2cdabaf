"""MCG — manifold constrained gradients (Chung, Sim, Ryu, Ye; NeurIPS 2022).

    for t in grid (descending):
        x̂0 = E[x0 | x_t]                                    (1 NFE, clipped as in the official code)
        x'_s = DDPM ancestral step from x_t with x̂0
        x''_s = x'_s − α ∇_{x_t} ‖y − A x̂0‖                   (1 VJP: the manifold constraint)
        y_s = √ᾱ_s y + √(1−ᾱ_s) A ξ                          (the measurement noised to level s)
        x_s = x''_s − A⁺(A x''_s − y_s)                       (projection onto {x : A x = y_s})

For inpainting the projection is the official one, (I − AᵀA) x'' + Aᵀ y_s, and the gradient on
known pixels is overwritten by it; A⁺ generalises it to any linear A. The projection makes y
exact in the result, so MCG is a method for noiseless measurements (DPS notes it amplifies noise);
with σ_y > 0 it still runs, projecting onto the noisy y, as the DPS paper's comparison did.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, guided_prediction, pairs, sample_norm, sample_noise, timesteps
from core.errors import ConfigError


class MCG(Solver):
    name = "mcg"
    needs = frozenset({"linear", "pixel"})

    def __init__(self, steps: int = 1000, alpha: float = 1.0, clip_x0: bool = True, spacing: str = "adm"):
        if not alpha >= 0:
            raise ConfigError(f"MCG alpha must be >= 0, got {alpha}; set solver.alpha.")
        self.steps, self.alpha, self.clip_x0, self.spacing = int(steps), float(alpha), bool(clip_x0), spacing

    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        loss = lambda x0: sample_norm(y - task.A(x0))  # noqa: E731
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            eps, x0, g, _ = guided_prediction(prior, x, t, cond, loss, self.clip_x0)
            with torch.no_grad():
                last = s < 0
                noise = None if last else sample_noise(gens, x)
                x_s = ddim_step(x.detach(), eps, x0, a_t, a_s, 1.0, noise) - self.alpha * g
                y_s = y if last else a_s.sqrt() * y + (1 - a_s).sqrt() * task.A(sample_noise(gens, x))
                x = x_s - task.pinv(task.A(x_s) - y_s)
        return x.detach()
