"""DPS — Diffusion Posterior Sampling (Chung, Kim, Mccann, Klasky, Ye; ICLR 2023), Algorithm 1.

    x_T ~ N(0, I)
    for t in grid (descending):
        x̂0 = E[x0 | x_t]                        (1 NFE; clipped to [-1,1] as in the official code)
        x'_s = ancestral/DDIM step from x_t with x̂0  (η = 1: DDPM ancestral, the paper's sampler)
        x_s = x'_s − step · ∇_{x_t} ‖y − A(D(x̂0))‖   (1 VJP through the network)

DSG plug-in (`dsg={"enabled": true, "rate": g_r, "interval": k}`; Yang et al., ICML 2024): on every k-th
step counting down (the official `idx % interval == 0` with idx = N-1, …, 0, so the last step is always
guided) the guided sample is put on the sphere of radius √n·σ_t around the step mean
(`common.dsg_step`), and `scale`/`form` are unused; other steps are unguided and cost no VJP.

On a latent prior (latent DPS) the state is z, D is the VAE decoder and the gradient flows through
D and the UNet: 1 NFE + 1 UNet VJP + 1 decode + 1 decoder VJP per step. `clip_x0` clips only pixel
x̂0: latents are not confined to [-1,1], so clipping them would distort x̂0 (PSLD does not clip).

Ancestral variance (η = 1): `fixed_small` is DDIM η's σ (β̃ at η = 1); `learned` is ADM's learned_range
from the checkpoint's variance channels and `fixed_large` is β', both as guided-diffusion's p_sample that the
official DPS code calls (the official DPS ADM configs: learn_sigma true, so learned); η < 1 needs fixed_small.

Step size forms, both per sample:
    code   step = scale · ∇‖r‖            (official repository: plain norm, `scale` from its configs)
    paper  step = ζ'/‖r‖ · ∇‖r‖²           (paper, App. C); identical to `code` with scale = 2ζ'
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import (VARIANCES, check_variance, ddim_sigma, ddim_step, ddpm_step, ddpm_variance, dsg_step,
                            guided_prediction, learned_variance_channels, pairs, residual, sample_noise, timesteps)
from core.errors import ConfigError

FORMS = ("code", "paper")


class DPS(Solver):
    name = "dps"

    def __init__(self, steps: int = 1000, scale: float = 0.5, form: str = "code", eta: float = 1.0,
                 clip_x0: bool = True, spacing: str = "adm", dsg: dict | None = None, variance: str = "fixed_small"):
        if variance not in VARIANCES or (variance != "fixed_small" and eta != 1.0):
            raise ConfigError(f"DPS variance must be one of {VARIANCES} ({variance!r} given), and learned/fixed_large "
                              "are DDPM steps (eta = 1); set solver.variance / solver.eta.")
        if variance == "learned" and (dsg or {}).get("enabled"):
            raise ConfigError("DSG's sphere radius √n·σ_t needs one σ per step: use solver.variance=fixed_small or "
                              "fixed_large with DSG.")
        self.variance = variance
        if form not in FORMS:
            raise ConfigError(f"DPS step-size form must be one of {FORMS}, not {form!r}; set solver.form.")
        if not scale >= 0:
            raise ConfigError(f"DPS scale must be >= 0, got {scale}; set solver.scale.")
        self.steps, self.scale, self.form, self.eta = int(steps), float(scale), form, float(eta)
        self.clip_x0, self.spacing = bool(clip_x0), spacing
        self.dsg = {"enabled": False, "rate": 0.2, "interval": 1, **dict(dsg or {})}
        if self.dsg["enabled"] and not (0 <= self.dsg["rate"] <= 1 and int(self.dsg["interval"]) >= 1 and self.eta > 0):
            raise ConfigError("DSG needs 0 <= dsg.rate <= 1, dsg.interval >= 1 and eta > 0 (the sphere's radius is "
                              "√n·σ_t); set solver.dsg.rate / solver.dsg.interval / solver.eta.")

    def check(self, prior, task):
        super().check(prior, task)
        check_variance(self.variance, prior)

    def loss(self, prior, task, y):
        """The per-sample loss whose gradient is the guidance: ‖r‖ (code form) or ‖r‖² (paper form)."""
        if self.form == "code":
            return lambda x0: residual(prior, task, y, x0)
        return lambda x0: residual(prior, task, y, x0).square()

    def sigma(self, a_t, a_s, raw):
        """The ancestral step's noise scale: DDIM η's (fixed_small), or β' / ADM's learned range (η = 1)."""
        if self.variance == "fixed_small":
            return ddim_sigma(a_t, a_s, self.eta)
        return ddpm_variance(a_t, a_s, self.variance, raw).sqrt()

    def prior_step(self, x, eps, x0, a_t, a_s, noise, raw):
        """The unguided step x_t → x_s: DDIM(η) (fixed_small), else the DDPM posterior mean plus σ ξ."""
        if self.variance == "fixed_small":
            return ddim_step(x, eps, x0, a_t, a_s, self.eta, noise)
        return ddpm_step(x, x0, a_t, a_s, noise, self.variance, raw)

    def dps_update(self, x, eps, x0, grad, norm2, a_t, a_s, noise, raw):
        """x_s = ancestral/DDIM step − step size · ∇ (code: scale; paper: ζ'/‖r‖ on ∇‖r‖², per sample)."""
        if self.form == "code":
            step = self.scale * grad
        else:
            zeta = self.scale / norm2.sqrt().clamp_min(torch.finfo(norm2.dtype).tiny)
            step = zeta.reshape(-1, *([1] * (grad.dim() - 1))) * grad
        return self.prior_step(x, eps, x0, a_t, a_s, noise, raw) - step

    def dsg_update(self, x, eps, x0, grad, a_t, a_s, noise, raw):
        """DSG: the guided sample on the sphere around the step mean (unguided steps: the plain ancestral step)."""
        mean = self.prior_step(x, eps, x0, a_t, a_s, None, raw)
        if noise is None:
            return mean
        sigma = self.sigma(a_t, a_s, raw)
        return mean + sigma * noise if grad is None else dsg_step(mean, sigma, noise, grad, float(self.dsg["rate"]))

    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        dsg = self.dsg["enabled"]
        loss = (lambda x0: residual(prior, task, y, x0)) if dsg else self.loss(prior, task, y)
        clip = self.clip_x0 and not prior.is_latent
        grid = pairs(timesteps(prior.T, self.steps, self.spacing))
        for i, (t, s) in enumerate(grid):
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            guided = not dsg or (len(grid) - 1 - i) % int(self.dsg["interval"]) == 0  # counting down: last is guided
            eps, x0, grad, value = guided_prediction(prior, x, t, cond, loss if guided else None, clip)
            raw = learned_variance_channels(prior) if self.variance == "learned" else None
            with torch.no_grad():
                noise = sample_noise(gens, x) if self.eta > 0 and s >= 0 else None
                if dsg:
                    x = self.dsg_update(x.detach(), eps, x0, grad, a_t, a_s, noise, raw)
                else:
                    x = self.dps_update(x.detach(), eps, x0, grad, value, a_t, a_s, noise, raw)
        return prior.decode(x.detach())
