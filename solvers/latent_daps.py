"""LatentDAPS — Decoupled Annealing Posterior Sampling in a latent diffusion model (Zhang et al., CVPR 2025),
as the official `LatentDAPS` sampler (zhangbingliang2019/DAPS @ 098df6b: sampler.py, cores/mcmc.py,
cores/scheduler.py, forward_operator `LatentWrapper`, configs/sampler/sd_edm_daps.yaml, configs/task/*.yaml).

VE view of the VP latent prior, as pixel DAPS (solvers/daps.py): z = z_VP/√ᾱ at level σ = √((1-ᾱ)/ᾱ),
denoiser D_θ(z; σ) = ẑ0(√ᾱ z, t(σ)); every σ where the network is called is snapped to the prior's nearest
discrete level (log scale). D below is the VAE decoder.

    annealing levels σ_0 > … > σ_{N-1}: the first N points of the EDM poly-7 grid of N+1 points from σ_max to
    σ_min (the official scheduler's grid, whose last point is replaced by 0); z ~ N(0, σ_0² I)
    for each level k:
        ẑ0 = PF-ODE from σ_k to ode_sigma_min, `ode_steps` Euler steps on a poly-7 grid   (ode_steps NFE, no grad)
             z ← z + (σ' − σ)(z − D_θ(z; σ))/σ
        MCMC on z0 targeting  exp(−‖A(D(z0)) − y‖²/τ²) · N(z0; ẑ0, σ_k² I), started at ẑ0:
             s(z0) = −clamp(∇_{z0}‖A(D(z0)) − y‖², −c, c)/τ² + (ẑ0 − z0)/σ_k²      (1 decode + 1 decoder VJP)
             langevin: z0 ← z0 + η_k s + √(2η_k) ξ
             hmc:      v ~ N(0, I) once per level;  v ← m v + √η_k s + √(2(1−m)) ξ;  z0 ← z0 + √η_k v
             η_k = lr (1 + k/(N+1) (lr_min_ratio − 1))
        z = z0 + σ_{k+1} ξ   (no noise after the last level)
    return D(z0)

Cost per sample: N·ode_steps NFEs (×2 under CFG), no UNet VJP (the MCMC gradient goes through A∘D only),
N·mcmc_steps decodes + decoder VJPs, and 1 final decode.

Defaults ("DAPS-100", latent): N = 50 levels × 2 ODE steps, σ_max 10, σ_min 0.1, ODE σ_min 1e-3
(configs/sampler/sd_edm_daps.yaml and the 50 × 2 overrides of commands/ldm_*.sh and sd_*.sh), τ = 0.01,
gradient clamp c = 1 (LatentWrapper.gradient), HMC with the `ldm` group's super-resolution values
(configs/task/down_sampling.yaml: 24 steps, lr 1.35e-4, lr_min_ratio 0.023, momentum 0.86). The per-task
ldm / sd values are listed in conf/solver/latent_daps.yaml.

Choices where the official code does not carry over (see the config): the network is called at the prior's
discrete levels (the official LDM/SD wrappers feed a continuous timestep (M−1)·t(σ)); the ODE's last Euler
step lands exactly on ode_sigma_min (no network call there); the official NaN early stop (return zeros) is
not reproduced (the harness records a diverged row instead).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import annealing_sigmas, annealing_step_size, loss_grad, pf_ode
from core.errors import ConfigError
from core.rng import randn

MCMC = ("hmc", "langevin")


class LatentDAPS(Solver):
    name = "latent_daps"
    needs = frozenset({"latent"})
    snap_ode_end = False  # the official latent ODE ends at σ = 1e-3, below every level of SD's schedule

    def __init__(self, annealing_steps: int = 50, ode_steps: int = 2, mcmc_steps: int = 24, lr: float = 1.35e-4,
                 lr_min_ratio: float = 0.023, tau: float = 0.01, mcmc: str = "hmc", momentum: float = 0.86,
                 grad_clamp: float | None = 1.0, sigma_max: float = 10.0, sigma_min: float = 0.1,
                 ode_sigma_min: float = 1e-3):
        if mcmc not in MCMC:
            raise ConfigError(f"LatentDAPS mcmc must be one of {MCMC}, not {mcmc!r}; set solver.mcmc.")
        if annealing_steps < 1 or ode_steps < 1 or mcmc_steps < 0:
            raise ConfigError("LatentDAPS needs annealing_steps >= 1, ode_steps >= 1 and mcmc_steps >= 0; "
                              "set solver.annealing_steps / ode_steps / mcmc_steps.")
        if not (lr > 0 and lr_min_ratio > 0 and tau > 0):
            raise ConfigError(f"LatentDAPS needs lr > 0, lr_min_ratio > 0 and tau > 0 (got {lr}, {lr_min_ratio}, "
                              f"{tau}); set solver.lr / lr_min_ratio / tau.")
        if not 0 <= momentum < 1:
            raise ConfigError(f"LatentDAPS momentum must be in [0, 1), got {momentum}; set solver.momentum.")
        if grad_clamp is not None and not grad_clamp > 0:
            raise ConfigError(f"LatentDAPS grad_clamp must be > 0 or null (no clamp), got {grad_clamp}; "
                              "set solver.grad_clamp.")
        if not sigma_max > sigma_min > ode_sigma_min > 0:
            raise ConfigError("LatentDAPS needs sigma_max > sigma_min > ode_sigma_min > 0; fix solver.sigma_*.")
        self.annealing_steps, self.ode_steps, self.mcmc_steps = int(annealing_steps), int(ode_steps), int(mcmc_steps)
        self.lr, self.lr_min_ratio, self.tau = float(lr), float(lr_min_ratio), float(tau)
        self.mcmc, self.momentum = mcmc, float(momentum)
        self.grad_clamp = None if grad_clamp is None else float(grad_clamp)
        self.sigma_max, self.sigma_min, self.ode_sigma_min = float(sigma_max), float(sigma_min), float(ode_sigma_min)

    def step_size(self, k: int) -> float:
        return annealing_step_size(self.lr, self.lr_min_ratio, self.annealing_steps, k)

    def data_grad(self, prior, task, y, z):
        """∇_z ‖A(D(z)) − y‖² per sample (one decode, one decoder VJP), clamped elementwise to [−c, c]."""
        g = loss_grad(lambda v: (task.A(prior.decode(v)) - y).flatten(1).square().sum(1), z)
        return g if self.grad_clamp is None else g.clamp(-self.grad_clamp, self.grad_clamp)

    def sample_z0(self, prior, task, y, z0_hat, sigma: float, eta: float, gens):
        """`mcmc_steps` Langevin or damped-HMC steps on exp(−‖A(D(z0)) − y‖²/τ²) N(z0; ẑ0, σ² I) from ẑ0."""
        shape, like = z0_hat.shape[1:], dict(dtype=z0_hat.dtype, device=z0_hat.device)
        z, h, m = z0_hat.clone(), eta ** 0.5, self.momentum
        # momentum 0 multiplies the initial velocity away: not drawing it makes HMC(m=0) the Langevin chain
        v = randn(gens, shape, **like) if self.mcmc == "hmc" and m > 0 else torch.zeros_like(z)
        for _ in range(self.mcmc_steps):
            score = -self.data_grad(prior, task, y, z) / self.tau ** 2 + (z0_hat - z) / sigma ** 2
            xi = randn(gens, shape, **like)
            if self.mcmc == "langevin":
                z = z + eta * score + (2 * eta) ** 0.5 * xi
            else:
                v = m * v + h * score + (2 * (1 - m)) ** 0.5 * xi
                z = z + h * v
        return z

    def solve(self, prior, task, y, gens, cond=None):
        levels = prior.sigmas
        ts = [prior.sigma_to_t(s) for s in annealing_sigmas(self.sigma_max, self.sigma_min, self.annealing_steps)]
        z = levels[ts[0]] * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        for k, t in enumerate(ts):
            with torch.no_grad():
                z0_hat = pf_ode(prior, z, t, cond, self.ode_sigma_min, self.ode_steps, self.snap_ode_end)
            z0 = self.sample_z0(prior, task, y, z0_hat, levels[t], self.step_size(k), gens).detach()
            if k + 1 < len(ts):
                z = z0 + levels[ts[k + 1]] * randn(gens, prior.state_shape, dtype=y.dtype, device=y.device)
        with torch.no_grad():
            return prior.decode(z0)
