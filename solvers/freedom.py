"""FreeDoM — training-free energy-guided sampling (Yu et al., ICCV 2023), with the measurement
residual as its energy.

    for t in grid (descending):
        repeat r times (time travel, only for t inside `travel_window`):
            x̂0 = E[x0 | x_t]                                  (1 NFE)
            x'_s = DDPM/DDIM(η) step from x_t with x̂0
            x_s = x'_s − ρ_t ∇_{x_t} ‖y − A(D(x̂0))‖,  ρ_t = √ᾱ_t · rho_scale   (1 VJP; only for t > stop)
            if not the last repeat:  x_t ← √(ᾱ_t/ᾱ_s) x_s + √(1−ᾱ_t/ᾱ_s) ξ     (re-noise and redo)

ρ_t = √ᾱ_t·rho_scale with guidance stopped below `stop` is the face-task rule of the official code
(Face-GD/functions/denoising.py: e.g. landmark 500/200, segmentation 0.2/200); the residual norm
plays the role of their network-based distances. Cost: (1 NFE + 1 VJP) per step and repeat.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, guided_prediction, pairs, renoise, residual, sample_noise, timesteps
from core.errors import ConfigError


class FreeDoM(Solver):
    name = "freedom"

    def __init__(self, steps: int = 100, rho_scale: float = 4.0, stop: int = 0, repeat: int = 1,
                 travel_window: tuple = (0, 1000), eta: float = 1.0, spacing: str = "adm"):
        if rho_scale < 0 or repeat < 1:
            raise ConfigError(f"FreeDoM needs rho_scale >= 0 and repeat >= 1 (got {rho_scale}, {repeat}); "
                              "set solver.rho_scale / solver.repeat.")
        self.steps, self.rho_scale, self.stop, self.repeat = int(steps), float(rho_scale), int(stop), int(repeat)
        self.travel_window, self.eta, self.spacing = tuple(travel_window), float(eta), spacing

    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        lo, hi = self.travel_window
        loss = lambda x0: residual(prior, task, y, x0)  # noqa: E731
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            guided = t > self.stop
            repeats = self.repeat if lo <= t <= hi and s >= 0 else 1
            for r in range(repeats):
                eps, x0, g, _ = guided_prediction(prior, x, t, cond, loss if guided else None)
                with torch.no_grad():
                    noise = sample_noise(gens, x) if self.eta > 0 and s >= 0 else None
                    x_s = ddim_step(x.detach(), eps, x0, a_t, a_s, self.eta, noise)
                    if guided:
                        x_s = x_s - a_t.sqrt() * self.rho_scale * g
                    if r < repeats - 1:
                        x_s = renoise(x_s, a_s, a_t, sample_noise(gens, x))
                x = x_s
        return prior.decode(x.detach())
