"""DDRM — Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song; NeurIPS 2022), Algorithm 1.

Everything happens in the SVD basis of A = U diag(s) Vᵀ, in VE scale: x̄ = Vᵀx/√ᾱ with noise level
σ_t = √((1-ᾱ_t)/ᾱ_t), ȳ_i = (Uᵀy)_i / s_i, and the measurement noise of ȳ_i is σ_y / s_i.

    x̄_T: s_i σ_T > σ_y: ȳ_i + √(σ_T² - σ_y²/s_i²) ξ;   otherwise σ_T ξ
    for t → s on the grid (descending; s = -1 is σ = 0):
        x̂0 = E[x0 | x_t]; x̄0 = Vᵀx̂0; ε̄ = (x̄_t - x̄0)/σ_t          (1 NFE, no VJP)
        s_i σ_s > σ_y      x̄_s = η_b ȳ_i + (1-η_b) x̄0 + √(σ_s² - η_b² σ_y²/s_i²) ξ   (noisier than ȳ_i)
        s_i σ_s < σ_y      x̄_s = x̄0 + √(1-η²) σ_s (ȳ_i - x̄0)/(σ_y/s_i) + η σ_s ξ     (less noisy)
        otherwise          x̄_s = x̄0 + √(1-η²) σ_s ε̄ + η σ_s ξ                       (s_i = 0, or equality)
        (strict comparisons as the official code: with σ_y = 0 the last step, σ_s = 0, is the third case and
        returns x̄0 on observed coefficients too)
        x_s = √ᾱ_s V x̄_s
    return x_{-1} = V x̄_{-1}, which is V x̄0 of the last step: at σ_{-1} = 0 every case above gives x̄0

Defaults (official `ddrm` repository, README/runners): 20 steps, η = 0.85, η_b = 1.
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import pairs, safe_div, svd_coefficients, timesteps
from core.errors import ConfigError
from core.rng import randn


class DDRM(Solver):
    name = "ddrm"
    needs = frozenset({"linear", "svd", "gaussian_noise", "pixel"})

    def __init__(self, steps: int = 20, eta: float = 0.85, eta_b: float = 1.0, spacing: str = "leading"):
        if not (0 <= eta <= 1 and 0 <= eta_b <= 1):
            raise ConfigError(f"DDRM needs 0 <= eta, eta_b <= 1 (got {eta}, {eta_b}); set solver.eta / solver.eta_b.")
        self.steps, self.eta, self.eta_b, self.spacing = int(steps), float(eta), float(eta_b), spacing

    def _update(self, x0b, epsb, ybar, sv, sig_s, sy, noise):
        """The three-case DDRM transition to noise level sig_s (VE, per sample [B,1]) for every coefficient."""
        eta, eta_b = self.eta, self.eta_b
        ny = safe_div(torch.full_like(sv, sy), sv)  # σ_y/s_i: the noise level of ȳ_i
        free = x0b + (1 - eta ** 2) ** 0.5 * sig_s * epsb + eta * sig_s * noise
        quieter = x0b + (1 - eta ** 2) ** 0.5 * sig_s * safe_div(ybar - x0b, ny) + eta * sig_s * noise
        louder = eta_b * ybar + (1 - eta_b) * x0b + (sig_s ** 2 - (eta_b * ny) ** 2).clamp_min(0).sqrt() * noise
        seen = sv > 0  # the official cases cover the singular values only; unobserved coefficients are free
        return torch.where(seen & (sv * sig_s > sy), louder, torch.where(seen & (sv * sig_s < sy), quieter, free))

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        svd, sv, uy = svd_coefficients(task, y)
        ybar, sy = safe_div(uy, sv), task.sigma_y
        d = sv.shape[1]
        grid = pairs(timesteps(prior.T, self.steps, self.spacing))
        sig_T = prior.sigma(grid[0][0], uy)  # per sample [B|1, 1], against the coefficients
        ny = safe_div(torch.full_like(sv, sy), sv)
        xi = randn(gens, (d,), dtype=y.dtype, device=y.device)
        xb = torch.where((sv > 0) & (sv * sig_T > sy), ybar + (sig_T ** 2 - ny ** 2).clamp_min(0).sqrt() * xi, sig_T * xi)
        for t, s in grid:
            x = svd.V(xb * prior.abar(t, xb).sqrt())
            eps, x0 = prior.predict(x, t, cond)
            x0b = svd.Vt(x0)
            epsb = (xb - x0b) / prior.sigma(t, xb)
            noise = randn(gens, (d,), dtype=y.dtype, device=y.device) if s >= 0 else torch.zeros_like(xb)
            xb = self._update(x0b, epsb, ybar, sv, prior.sigma(s, xb), sy, noise)
        return prior.decode(svd.V(xb))
