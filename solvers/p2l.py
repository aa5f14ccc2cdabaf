"""P2L — Prompt-tuning latent diffusion models for inverse problems (Chung, Ye, Milanfar, Delbracio;
ICML 2024; arXiv 2310.01110). No official code exists; the loop below follows the method as the paper
describes it (alternating updates of the text embedding c and the latent z, plus a projection of the
Tweedie latent onto the encoder's range). Choices the paper leaves open are parameters (see the config).

    c ← the condition's hidden states, one row per sample (unconditional: the embedding of "")
    z_T ~ N(0, I)
    for i, (t, s) in grid (descending; s the next grid point):
        if i % prompt_every == 0:                                  prompt tuning, warm-started from the last c
            repeat K times:
                ẑ0 = Tweedie(z_t; c)                               (1 NFE, UNet VJP w.r.t. c)
                c ← Adam(c, ∇_c ‖y − A D(ẑ0)‖²)                    (decode + decoder VJP)
        ε̂, ẑ0 = prior(z_t; c)                                      (1 NFE, with grad w.r.t. z_t)
        g = ∇_{z_t} ‖y − A D(ẑ0)‖                                  (latent DPS: plain norm, per sample)
        if (i + 1) % proj_every == 0:                              projection onto the encoder's range
            x* = argmin_x ‖y − A x‖² + λ ‖x − D(ẑ0)‖²              (CG on (AᵀA + λI) x = Aᵀy + λ D(ẑ0))
            ẑ0 ← E(x*)                                             (1 encode)
        z_s = DDIM(z_t → z_s; ε̂, ẑ0, η) − scale · g
    return D(z_0)

Classifier-free guidance is the condition's own: the model's guidance_scale, or this solver's `cfg_scale`
(applied to the condition by `Solver.condition`); only the conditional row c is tuned, the unconditional one stays.
Cost per step with a prompt update (per sample; ×2 NFEs under CFG): K + 1 NFEs, K + 1 UNet VJPs (K w.r.t.
c, 1 w.r.t. z_t), K + 1 decodes and decoder VJPs, and 1 encode on projection steps; one final decode.
With K = 1 and no CFG that is 2 NFEs per step: STSL's 2000 NFEs for P2L at 1000 steps.
K = 0 and proj_every = 0 is latent DPS with DDIM (= solvers.dps.DPS(eta, spacing) on a latent prior).
"""
from __future__ import annotations

import torch

from models.base import per_sample
from solvers.base import Solver
from solvers.common import (conjugate_gradient, ddim_step, loss_grad, pairs, residual, sample_noise, sample_norm,
                            timesteps)
from core.errors import ConfigError


class P2L(Solver):
    name = "p2l"

    def __init__(self, steps: int = 1000, prompt_steps: int = 1, prompt_lr: float = 1e-4, prompt_every: int = 1,
                 warm_adam: bool = True, scale: float = 1.0, proj_every: int = 10, lam: float = 1.0,
                 cg_iters: int = 5, eta: float = 0.0, spacing: str = "leading",
                 cfg_scale: float | None = None):
        self.set_cfg_scale(cfg_scale)
        if prompt_steps < 0 or prompt_every < 1 or not prompt_lr > 0:
            raise ConfigError(f"P2L needs prompt_steps >= 0, prompt_every >= 1 and prompt_lr > 0; got {prompt_steps}, "
                              f"{prompt_every}, {prompt_lr}; set solver.prompt_steps/prompt_every/prompt_lr.")
        if proj_every < 0 or not lam > 0 or cg_iters < 1:
            raise ConfigError(f"P2L projection needs proj_every >= 0 (0: off), lam > 0 and cg_iters >= 1; got "
                              f"{proj_every}, {lam}, {cg_iters}; set solver.proj_every/lam/cg_iters.")
        if not scale >= 0:
            raise ConfigError(f"P2L scale must be >= 0, got {scale}; set solver.scale.")
        if not 0 <= eta <= 1:
            raise ConfigError(f"P2L eta must be in [0, 1], got {eta}; set solver.eta.")
        self.steps, self.prompt_steps, self.prompt_lr = int(steps), int(prompt_steps), float(prompt_lr)
        self.prompt_every, self.warm_adam, self.scale = int(prompt_every), bool(warm_adam), float(scale)
        self.proj_every, self.lam, self.cg_iters, self.eta = int(proj_every), float(lam), int(cg_iters), float(eta)
        self.spacing = spacing

    @property
    def needs(self) -> frozenset:
        return frozenset({"latent"} | ({"linear"} if self.proj_every > 0 else set()))

    # -- the prompt --------------------------------------------------------------------------------
    def initial_prompt(self, prior, cond, B: int):
        """(the condition, c [B, seq, dim] its conditional rows): one tunable row per sample."""
        base = prior.embed([""]) if cond is None else cond
        return base, per_sample(base.cond, B).clone()

    @staticmethod
    def residual(prior, task, y, z0):
        """‖y − A D(ẑ0)‖ per sample."""
        return residual(prior, task, y, z0)

    def prompt_loss(self, prior, task, y, z, t, base, c):
        """‖y − A D(ẑ0(z_t, c))‖² per sample, the objective of the prompt update (z_t held fixed)."""
        _, z0 = prior.predict(z, t, base.replace(cond=c))
        return self.residual(prior, task, y, z0).square()

    def tune_prompt(self, prior, task, y, z, t, base, c, opt):
        """K Adam steps on c at fixed z_t; each sample's loss reaches only its own row of c."""
        for _ in range(self.prompt_steps):
            c.grad = loss_grad(lambda v: self.prompt_loss(prior, task, y, z, t, base, v), c)  # noqa: B023
            opt.step()
            c.grad = None
        return c

    # -- the projection onto the encoder's range ---------------------------------------------------
    def prox(self, task, y, x_hat):
        """x* = argmin_x ‖y − A x‖² + λ‖x − x̂‖², i.e. (AᵀA + λI) x = Aᵀy + λ x̂, by CG (per sample)."""
        return conjugate_gradient(lambda v: task.At(task.A(v)) + self.lam * v, task.At(y) + self.lam * x_hat,
                                  iters=self.cg_iters)

    def guidance_loss(self, prior, task, y, z, t, cond):
        """‖y − A D(ẑ0(z_t))‖ per sample, with (ε̂, ẑ0, D(ẑ0)) of this evaluation (the image the projection starts from)."""
        eps, z0 = prior.predict(z, t, cond)
        x_hat = prior.decode(z0)
        return sample_norm(y - task.A(x_hat)), (eps, z0, x_hat)

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(prior.embed([""]) if cond is None else cond)
        z = self.initial_noise(prior, gens, y)
        base, c = self.initial_prompt(prior, cond, z.shape[0])
        opt = torch.optim.Adam([c], lr=self.prompt_lr)
        for i, (t, s) in enumerate(pairs(timesteps(prior.T, self.steps, self.spacing))):
            a_t, a_s = prior.abar(t, z), prior.abar(s, z)
            if self.prompt_steps and i % self.prompt_every == 0:
                if not self.warm_adam:
                    opt = torch.optim.Adam([c], lr=self.prompt_lr)
                self.tune_prompt(prior, task, y, z, t, base, c, opt)
            project = self.proj_every > 0 and (i + 1) % self.proj_every == 0
            guided = self.scale > 0
            if guided:
                grad, (eps, z0, x_hat) = loss_grad(lambda v: self.guidance_loss(prior, task, y, v, t, base.replace(cond=c)),  # noqa: B023
                                                   z, aux=True)
            else:
                eps, z0 = prior.predict(z, t, base.replace(cond=c))
                x_hat = prior.decode(z0) if project else None
            if project:
                z0 = prior.encode(self.prox(task, y, x_hat))
            noise = sample_noise(gens, z) if self.eta > 0 and s >= 0 else None
            z = ddim_step(z, eps, z0, a_t, a_s, self.eta, noise)
            if guided:
                z = z - self.scale * grad
        return prior.decode(z)
