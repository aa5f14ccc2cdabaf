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
                            eps_from_x0, learned_variance_channels, pairs, per_sample_norm, timesteps)
from tasks.errors import ConfigError
from tasks.rng import randn

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

    def guidance(self, x_t, x0, task, y, prior):
        """The data-consistency step for each sample (needs x0 to carry the graph back to x_t)."""
        norm = per_sample_norm(y - task.A(prior.decode(x0)))
        if self.form == "code":
            (g,) = torch.autograd.grad(norm.sum(), x_t)
            return self.scale * g
        (g,) = torch.autograd.grad(norm.square().sum(), x_t)
        zeta = self.scale / norm.detach().clamp_min(torch.finfo(norm.dtype).tiny)
        return zeta.reshape(-1, *([1] * (g.dim() - 1))) * g

    def solve(self, prior, task, y, gens, cond=None):
        x = self.initial_noise(prior, gens, y)
        dsg = self.dsg["enabled"]
        clip = self.clip_x0 and not prior.is_latent
        grid = pairs(timesteps(prior.T, self.steps, self.spacing))
        for i, (t, s) in enumerate(grid):
            guided = not dsg or (len(grid) - 1 - i) % int(self.dsg["interval"]) == 0
            x = x.detach().requires_grad_(guided)
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            with torch.set_grad_enabled(guided):
                eps, x0 = prior.predict(x, t, cond)
                raw = learned_variance_channels(prior) if self.variance == "learned" else None
                if clip:
                    x0 = x0.clamp(-1, 1)
                if dsg and guided:
                    (grad,) = torch.autograd.grad(per_sample_norm(y - task.A(prior.decode(x0))).sum(), x)
                elif guided:
                    step = self.guidance(x, x0, task, y, prior)
            with torch.no_grad():
                x0 = x0.detach()
                eps = eps_from_x0(x, x0, a_t) if clip else eps.detach()
                noise = randn(gens, x.shape[1:], dtype=x.dtype, device=x.device) if self.eta > 0 and s >= 0 else None
                if self.variance == "fixed_small":
                    mean, sigma = ddim_step(x.detach(), eps, x0, a_t, a_s, self.eta, None), ddim_sigma(a_t, a_s, self.eta)
                else:
                    mean = ddpm_step(x.detach(), x0, a_t, a_s)
                    sigma = ddpm_variance(a_t, a_s, self.variance, raw).sqrt() if s >= 0 else None
                if not dsg:
                    x = (mean if noise is None else mean + sigma * noise) - step
                elif noise is None:
                    x = mean
                elif guided:
                    x = dsg_step(mean, sigma, noise, grad, float(self.dsg["rate"]))
                else:
                    x = mean + sigma * noise
        return prior.decode(x.detach())
