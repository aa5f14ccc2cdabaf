"""DAPS — Decoupled Annealing Posterior Sampling (Zhang et al.; CVPR 2025), pixel version.

VE view of the VP prior: x = x_VP/√ᾱ at level σ = √((1-ᾱ)/ᾱ), denoiser D(x; σ) = x̂0(√ᾱ x, t(σ)); every
σ is snapped to the nearest level of the prior's discrete schedule (log scale).

    annealing levels σ_0 > … > σ_{N-1}: the first N points of the EDM poly-7 grid of N+1 points from σ_max
    to σ_min (`annealing_sigmas`, the official scheduler's grid, whose last point it replaces by 0);
    x ~ N(0, σ_0² I)
    for each level k:
        x̂0 = PF-ODE from σ_k to σ_ode_min, `ode_steps` Euler steps in σ on a poly-7 grid:
             x ← x + (σ' - σ)(x - D(x; σ))/σ                        (ode_steps NFE, no VJP)
        Langevin on x0 targeting exp(-‖A x0 - y‖²/τ²) N(x0; x̂0, σ_k² I), started at x̂0:
             x0 ← x0 + η_k (-∇‖A x0 - y‖²/τ² + (x̂0 - x0)/σ_k²) + √(2η_k) ξ     (gradient through A only)
             η_k = lr (1 + k/(N+1) (lr_min_ratio - 1))   (the decay over the official N+1 grid points)
        x = x0 + σ_{k+1} ξ   (no noise after the last level)
    return x0

Defaults (zhangbingliang2019/DAPS @ 098df6b, configs): DAPS-1K = 200 levels × 5 ODE steps, σ_max = 100,
σ_min = 0.1, ODE σ_min = 0.01, 100 Langevin steps, τ = 0.01 (the data weight 1/τ², as the code's
gradient), lr_min_ratio = 0.01, lr = 1e-4 (per task in the official configs: SR and Gaussian deblur
1e-4, box inpainting 5e-5, random inpainting 1e-4, motion deblur 5e-5, phase retrieval 5e-5, HDR 2e-5).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from tasks.errors import ConfigError
from tasks.rng import randn


def poly_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> list[float]:
    """EDM's grid (σ_max^{1/ρ} + i/(n-1)(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ, i = 0…n-1."""
    if n == 1:
        return [sigma_max]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (n - 1) * (b - a)) ** rho for i in range(n)]


def annealing_sigmas(sigma_max: float, sigma_min: float, n: int) -> list[float]:
    """DAPS's n annealing levels: the first n points of the (n+1)-point poly-7 grid (cores/scheduler.py
    builds num_steps+1 points and replaces the last by 0), so the last level is above σ_min."""
    return poly_sigmas(sigma_max, sigma_min, n + 1)[:n]


class DAPS(Solver):
    name = "daps"
    needs = frozenset({"pixel"})
    snap_ode_end = True  # the ODE's last Euler step ends on the prior's level nearest ode_sigma_min

    def __init__(self, annealing_steps: int = 200, ode_steps: int = 5, langevin_steps: int = 100,
                 lr: float = 1e-4, lr_min_ratio: float = 0.01, tau: float = 0.01, sigma_max: float = 100.0,
                 sigma_min: float = 0.1, ode_sigma_min: float = 0.01):
        if annealing_steps < 1 or ode_steps < 1 or langevin_steps < 0:
            raise ConfigError("DAPS needs annealing_steps >= 1, ode_steps >= 1, langevin_steps >= 0; "
                              "set solver.annealing_steps / ode_steps / langevin_steps.")
        if not (lr > 0 and tau > 0 and sigma_max > sigma_min > ode_sigma_min > 0):
            raise ConfigError("DAPS needs lr > 0, tau > 0 and sigma_max > sigma_min > ode_sigma_min > 0; "
                              "fix solver.lr / tau / sigma_*.")
        self.annealing_steps, self.ode_steps, self.langevin_steps = int(annealing_steps), int(ode_steps), int(langevin_steps)
        self.lr, self.lr_min_ratio, self.tau = float(lr), float(lr_min_ratio), float(tau)
        self.sigma_max, self.sigma_min, self.ode_sigma_min = float(sigma_max), float(sigma_min), float(ode_sigma_min)

    def step_size(self, k: int) -> float:
        """η_k: linear decay from lr towards lr·lr_min_ratio over the N+1 points of the official grid."""
        return self.lr * (1 + k / (self.annealing_steps + 1) * (self.lr_min_ratio - 1))

    # every name is a step index into the prior's schedule; sigma(t) is its VE level
    @staticmethod
    def _levels(prior):
        a = prior.alphas_cumprod
        return ((1 - a) / a).sqrt()

    def _snap(self, prior, sigma: float) -> int:
        return int((self._levels(prior).log() - torch.tensor(sigma, dtype=torch.float64).log()).abs().argmin())

    def _denoise(self, prior, x, t, cond):
        a = prior.abar(t, x)
        return prior.x0(a.sqrt() * x, t, cond)

    def _ode(self, prior, x, t_from, cond):
        levels = self._levels(prior)
        sigmas = poly_sigmas(float(levels[t_from]), self.ode_sigma_min, self.ode_steps + 1)
        grid = [self._snap(prior, s) for s in sigmas]
        targets = [levels[s].item() for s in grid[1:]]
        if not self.snap_ode_end:  # no network call at the end point: land exactly on ode_sigma_min
            targets[-1] = self.ode_sigma_min
        for t, sig_next in zip(grid[:-1], targets):
            sig = levels[t].item()
            x = x + (sig_next - sig) * (x - self._denoise(prior, x, t, cond)) / sig
        return x

    def solve(self, prior, task, y, gens, cond=None):
        levels = self._levels(prior)
        ts = [self._snap(prior, s) for s in annealing_sigmas(self.sigma_max, self.sigma_min, self.annealing_steps)]
        x = levels[ts[0]].item() * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        for k, t in enumerate(ts):
            sig = levels[t].item()
            with torch.no_grad():
                x0_hat = self._ode(prior, x, t, cond)
            eta = self.step_size(k)
            x0 = x0_hat.clone()
            for _ in range(self.langevin_steps):
                x0 = x0.detach().requires_grad_(True)
                with torch.enable_grad():
                    data = (task.A(prior.decode(x0)) - y).flatten(1).square().sum(1) / self.tau ** 2
                    (g,) = torch.autograd.grad(data.sum(), x0)
                with torch.no_grad():
                    xi = randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
                    x0 = x0 + eta * (-g + (x0_hat - x0) / sig ** 2) + (2 * eta) ** 0.5 * xi
            x0 = x0.detach()
            if k + 1 < len(ts):
                x = x0 + levels[ts[k + 1]].item() * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        return prior.decode(x0)
