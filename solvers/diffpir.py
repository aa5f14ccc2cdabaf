"""DiffPIR — Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al.; CVPRW 2023).

    x_T ~ N(0, I)
    for t → s on the grid (quad or uniform, descending):
        x̂0 = E[x0 | x_t]                                            (1 NFE, no VJP)
        x̂0' = argmin_x ‖y - A x‖² + ρ_t ‖x - x̂0‖²,  ρ_t = λ σ_n² / σ̄_t²,  σ̄_t = √(1-ᾱ_t)/√ᾱ_t
             closed form in the SVD basis: x̄0'_i = (s_i ŷ_i + ρ_t x̄0_i)/(s_i² + ρ_t)
             (a mask and a circular blur are special cases: elementwise and Fourier)
        ε̂' = (x_t - √ᾱ_t x̂0')/√(1-ᾱ_t)
        x_s = √ᾱ_s x̂0' + √(1-ᾱ_s) (√(1-ζ) ε̂' + √ζ ξ)

Units as in the official code: σ_n is the noise level on [0,1] images (σ_y/2 here, floored at 1e-3 as
there) while σ̄_t is on the model's [-1,1] scale. Defaults (yuanzhi-zhu/DiffPIR @ 111d26e): λ = 1,
ζ = 0.1 (deblur, SR), 100 steps, quad grid; inpainting uses ζ = 1, 20 steps.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import eps_from_x0, pairs, sample_noise, svd_coefficients, timesteps
from core.errors import ConfigError


class DiffPIR(Solver):
    name = "diffpir"
    needs = frozenset({"linear", "svd", "pixel"})

    def __init__(self, steps: int = 100, lam: float = 1.0, zeta: float = 0.1, spacing: str = "quad"):
        if not 0 <= zeta <= 1:
            raise ConfigError(f"DiffPIR zeta must be in [0, 1], got {zeta}; set solver.zeta.")
        if not lam > 0:
            raise ConfigError(f"DiffPIR lambda must be > 0, got {lam}; set solver.lam.")
        self.steps, self.lam, self.zeta, self.spacing = int(steps), float(lam), float(zeta), spacing

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        svd, sv, uy = svd_coefficients(task, y)
        sigma_n = max(task.sigma_y / 2, 1e-3)
        x = self.initial_noise(prior, gens, y)
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            _, x0 = prior.predict(x, t, cond)
            rho = self.lam * sigma_n ** 2 / prior.sigma(t, uy) ** 2
            x0 = svd.V((sv * uy + rho * svd.Vt(x0)) / (sv ** 2 + rho))
            eps = eps_from_x0(x, x0, a_t)
            noise = sample_noise(gens, x) if s >= 0 else torch.zeros_like(x)
            x = a_s.sqrt() * x0 + (1 - a_s).sqrt() * ((1 - self.zeta) ** 0.5 * eps + self.zeta ** 0.5 * noise)
        return prior.decode(x)
