"""Fast constrained sampling in pre-trained diffusion models (Graikos, Jojic, Samaras; arXiv 2410.18804),
as in the official `stable-diffusion/inpaint.ipynb` / `superres.ipynb`: inexact-Newton steps on z_t whose
direction J·e (J = ∂ẑ0/∂z_t) is a forward finite difference of the denoiser — no backprop through the UNet.

    z_T ~ N(0, I)
    for t in grid (descending), s the next grid point:
        ε̂, ẑ0 = prior(z_t)                                              (1 NFE)
        for k = 1 … n_inner:
            e    = error direction on the clean estimate ẑ0 (below)
            h_k  = h / ‖e‖_∞                                            (per sample)
            g    = (ẑ0(z_t + h_k e) − ẑ0) / h_k ;  g ← g / ‖g‖_∞         (1 NFE: ≈ J e)
            z_t  ← z_t + lr_k g ;  ε̂, ẑ0 = prior(z_t)                   (1 NFE)
        z_s = √ᾱ_s ẑ0 + √(1 − ᾱ_s − β̃) ε̂ + √β̃ ξ
    return D(ẑ0 at the last step)

Error directions e:
    mask     e = m_z ⊙ (E(Aᵀy) − ẑ0): m_z = 1 on latent pixels whose whole f×f pixel patch is observed
             (f the VAE's downsampling), every channel; E(Aᵀy) encoded once. No decoder gradient.
    decoder  e = −∇_{ẑ0} ‖y − A(D(ẑ0))‖₂, ∞-normalised: a VJP through the decoder only (SR in the paper).
    auto     mask on mask tasks, decoder otherwise.
Ancestral variance β̃ = β_t(1 − ᾱ_s)/(1 − ᾱ_t) with the single-step β_t = 1 − ᾱ_t/ᾱ_{t−1}, as the
official code (`variance: code`), or the strided DDPM posterior variance (`variance: ddim`, DDIM η = 1).
Cost per step: 1 + 2·n_inner NFEs (×2 under CFG), zero UNet VJPs; decoder direction adds n_inner
decodes + decoder VJPs.

Unconditional by default, as the official notebooks (an empty prompt, no class): `conditional: true` uses
the run's prompt (run.prompt) instead, a variant of ours.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from solvers.base import Solver
from solvers.common import ddim_sigma, inf_norm, loss_grad, pairs, residual, sample_noise, timesteps
from core.errors import ConfigError

DIRECTIONS = ("auto", "mask", "decoder")
VARIANCES = ("code", "ddim")


class Graikos(Solver):
    name = "graikos"
    needs_because = {"mask": "solver graikos with direction=mask needs a mask task (inpainting), not task={task}; "
                             "set solver.direction=decoder or auto."}

    def __init__(self, steps: int = 20, n_inner: int = 5, lr_start: float = 0.5, lr_end: float = 0.1,
                 h: float = 0.005, direction: str = "auto", variance: str = "code", spacing: str = "leading",
                 conditional: bool = False, cfg_scale: float | None = 1.0):
        self.set_cfg_scale(cfg_scale)
        if direction not in DIRECTIONS:
            raise ConfigError(f"Graikos direction must be one of {DIRECTIONS}, not {direction!r}; set solver.direction.")
        if variance not in VARIANCES:
            raise ConfigError(f"Graikos variance must be one of {VARIANCES}, not {variance!r}; set solver.variance.")
        if n_inner < 0 or not h > 0:
            raise ConfigError(f"Graikos needs n_inner >= 0 and h > 0, got {n_inner} and {h}; set solver.n_inner/h.")
        self.steps, self.n_inner, self.lr_start, self.lr_end = int(steps), int(n_inner), float(lr_start), float(lr_end)
        self.h, self.direction, self.variance, self.spacing = float(h), direction, variance, spacing
        self.conditional = bool(conditional)

    def _direction(self, task) -> str:
        if self.direction == "auto":
            return "mask" if "mask" in task.provides else "decoder"
        return self.direction

    @property
    def needs(self) -> frozenset:
        return frozenset({"latent"} | ({"mask"} if self.direction == "mask" else set()))

    @staticmethod
    def latent_mask(task, y, prior):
        """1 where a latent pixel's whole pixel patch is observed in every channel, per sample."""
        m = task.A(torch.ones_like(y)).amin(dim=1, keepdim=True)
        f = y.shape[-1] // prior.state_shape[-1]
        m_z = (F.avg_pool2d(m, f) > 1 - 1e-6).to(y.dtype)
        return m_z.expand(-1, prior.state_shape[0], -1, -1)

    @staticmethod
    def decoder_error(z0, task, y, prior):
        """−∇_{ẑ0} ‖y − A(D(ẑ0))‖₂ per sample, ∞-normalised (a decoder VJP; the UNet is not in the graph)."""
        g = loss_grad(lambda v: residual(prior, task, y, v), z0)
        return -g / inf_norm(g, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)

    def ancestral_std(self, prior, t, s, like):
        a_t, a_s = prior.abar(t, like), prior.abar(s, like)
        if self.variance == "ddim":
            return ddim_sigma(a_t, a_s, 1.0)
        beta = 1 - a_t / prior.abar(t - 1, like)  # the single-step β_t of the 1000-step chain
        return (beta * (1 - a_s) / (1 - a_t)).clamp_min(0).sqrt()

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(cond)
        kind = self._direction(task)
        cond = cond if self.conditional else None  # the official protocol is unconditional
        if kind == "mask":
            m_z, z_y = self.latent_mask(task, y, prior), prior.encode(task.At(y))
        lrs = torch.linspace(self.lr_start, self.lr_end, self.n_inner).tolist()
        tiny = torch.finfo(y.dtype).tiny
        z = self.initial_noise(prior, gens, y)
        for t, s in pairs(timesteps(prior.T, self.steps, self.spacing)):
            eps, z0 = prior.predict(z, t, cond)
            for lr in lrs:
                e = m_z * (z_y - z0) if kind == "mask" else self.decoder_error(z0, task, y, prior)
                h = self.h / inf_norm(e, keepdim=True).clamp_min(tiny)
                g = (prior.x0(z + h * e, t, cond) - z0) / h  # forward difference ≈ J e
                z = z + lr * g / inf_norm(g, keepdim=True).clamp_min(tiny)
                eps, z0 = prior.predict(z, t, cond)
            a_s = prior.abar(s, z)
            std = self.ancestral_std(prior, t, s, z)
            z = a_s.sqrt() * z0 + (1 - a_s - std ** 2).clamp_min(0).sqrt() * eps
            if s >= 0:
                z = z + std * sample_noise(gens, z)
        return prior.decode(z0)
