"""DAPS — Decoupled Annealing Posterior Sampling (Zhang et al.; CVPR 2025), pixel version.

VE view of the VP prior (`Prior.sigma`, `sigma_to_t`, `denoise`): x = x_VP/√ᾱ at level σ = √((1-ᾱ)/ᾱ),
denoiser D(x; σ) = x̂0(√ᾱ x, t(σ)); every σ is snapped to the nearest level of the prior's discrete
schedule (log scale).

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
from solvers.common import annealing_sigmas, annealing_step_size, loss_grad, pf_ode, sample_noise
from core.errors import ConfigError
from core.rng import randn


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
        return annealing_step_size(self.lr, self.lr_min_ratio, self.annealing_steps, k)

    # every name is a step index into the prior's schedule; prior.sigmas[t] is its VE level (host floats)
    def solve(self, prior, task, y, gens, cond=None):
        levels = prior.sigmas
        ts = [prior.sigma_to_t(s) for s in annealing_sigmas(self.sigma_max, self.sigma_min, self.annealing_steps)]
        x = levels[ts[0]] * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        for k, t in enumerate(ts):
            sig = levels[t]
            with torch.no_grad():
                x0_hat = pf_ode(prior, x, t, cond, self.ode_sigma_min, self.ode_steps, self.snap_ode_end)
            eta = self.step_size(k)
            x0 = x0_hat.clone()
            data = lambda v: (task.A(prior.decode(v)) - y).flatten(1).square().sum(1) / self.tau ** 2  # noqa: E731
            for _ in range(self.langevin_steps):
                g = loss_grad(data, x0)
                with torch.no_grad():
                    xi = sample_noise(gens, x0)
                    x0 = x0 + eta * (-g + (x0_hat - x0) / sig ** 2) + (2 * eta) ** 0.5 * xi
            if k + 1 < len(ts):
                x = x0 + levels[ts[k + 1]] * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        return prior.decode(x0)
