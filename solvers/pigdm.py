"""ΠGDM — Pseudoinverse-Guided Diffusion Models (Song, Vahdat, Mardani, Kautz; ICLR 2023), noisy form.

p(y | x_t) ≈ N(y; A x̂0, r_t² AAᵀ + σ_y² I) with r_t² = 1 - ᾱ_t (the posterior variance of x0 | x_t for
data of unit variance), so its score is

    g = (∂x̂0/∂x_t)ᵀ Aᵀ (r_t² AAᵀ + σ_y² I)⁻¹ (y - A x̂0)                      (1 NFE + 1 VJP)

    x_T = √ᾱ_T A⁺y + √(1-ᾱ_T) ξ   (`init: pinv`, the reference code; `init: noise` is x_T ~ N(0, I))
    for t → s on the grid (descending):
        ε̂, x̂0 = net(x_t);  g as above  (the inverse through the SVD, conjugate gradients without one)
        score + w·g, by Tweedie:  x̂0 ← x̂0 + w (1-ᾱ_t)/√ᾱ_t g
        inpainting (`replace_observed`, the reference code): x̂0 ← (1-m) ⊙ x̂0 + m ⊙ y (so g acts on the hole only)
        ε̂ ← (x_t - √ᾱ_t x̂0)/√(1-ᾱ_t)
        x_s = DDIM step (η) with (ε̂, x̂0)

The guidance is a correction of the score (w = 1: the paper's guided score), which makes ΠGDM exact
(up to time discretisation) when x0 ~ N(μ, I): then Cov[x0 | x_t] = r_t² I and p(y | x_t) is exactly
the Gaussian above. Defaults: 100 steps (paper), η = 1 (RED-diff's ΠGDM scripts), w = 1. The reference
code is NVlabs/RED-diff algos/pgdm.py (@ cdf18c9): `initialize` and the 'in2' (inpainting) replacement.

x̂0 is clipped to [-1,1] after the correction (`clip_x0`, pixel priors only; guided-diffusion's
`clip_denoised`, as in DPS). Without it every image of the learned digits DDPM diverges: at t ≈ T the
weight (1-ᾱ_t)/√ᾱ_t is ~160 and ∂x̂0/∂x_t = (I - √(1-ᾱ_t) ∂ε̂/∂x_t)/√ᾱ_t, so a network's small Jacobian
error is amplified by ~1/ᾱ_t (with the exact prior the two cancel). With it: digits PSNR 21.5 (box
inpainting) and 16.7 (SR×4), 8 images, 100 steps. The exactness claim above is for clip_x0=false
(Gaussian samples leave [-1,1]). The reference code's weight √ᾱ_s √ᾱ_t on x_s is no fix with the noisy
inverse: σ_y⁻² multiplies the residual as r_t → 0 and it diverged on the exact world (error ~1e9).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import (conjugate_gradient, ddim_step, eps_from_x0, loss_grad, pairs, paste_observed, safe_div,
                            sample_noise, svd_coefficients, timesteps)
from core.errors import ConfigError

INVERSES = ("auto", "svd", "cg")


class PiGDM(Solver):
    name = "pigdm"
    needs_because = {"svd": "ΠGDM with inverse=svd needs a task with an SVD; {task} has none here: set solver.inverse=cg."}

    def __init__(self, steps: int = 100, eta: float = 1.0, scale: float = 1.0, inverse: str = "auto",
                 cg_iters: int = 50, spacing: str = "adm", clip_x0: bool = True, init: str = "pinv",
                 replace_observed: bool = True):
        if init not in ("pinv", "noise"):
            raise ConfigError(f"ΠGDM init must be 'pinv' or 'noise', not {init!r}; set solver.init.")
        self.init, self.replace_observed = init, bool(replace_observed)
        if inverse not in INVERSES:
            raise ConfigError(f"ΠGDM inverse must be one of {INVERSES}, not {inverse!r}; set solver.inverse.")
        if not 0 <= eta <= 1:
            raise ConfigError(f"ΠGDM eta must be in [0, 1], got {eta}; set solver.eta.")
        self.steps, self.eta, self.scale, self.inverse = int(steps), float(eta), float(scale), inverse
        self.cg_iters, self.spacing, self.clip_x0 = int(cg_iters), spacing, bool(clip_x0)

    @property
    def needs(self) -> frozenset:
        return frozenset({"linear", "gaussian_noise", "pixel"} | ({"svd"} if self.inverse == "svd" else set()))

    def check(self, prior, task):
        """Across objects: conjugate gradients need an invertible r²AAᵀ + σ_y²I, i.e. this task's σ_y > 0."""
        super().check(prior, task)
        if self.inverse == "cg" or not task.has_svd:
            if task.sigma_y <= 0:
                raise ConfigError("ΠGDM with conjugate gradients needs sigma_y > 0 (r²AAᵀ + σ_y²I must be "
                                  "invertible); use a task with an SVD or measurement noise.")

    def weighted_residual(self, task, svd, sv, y, x0, r2):
        """Aᵀ (r² AAᵀ + σ_y² I)⁻¹ (y - A x̂0), per sample; r2 = 1 - ᾱ_t, per sample [B|1,1,…,1]."""
        sy2 = task.sigma_y ** 2
        if svd is not None:
            c = svd.Ut(y - task.A(x0))
            c = torch.nn.functional.pad(c[:, : sv.shape[1]], (0, sv.shape[1] - min(c.shape[1], sv.shape[1])))
            return svd.V(safe_div(sv * c, r2.reshape(-1, 1) * sv ** 2 + sy2))
        v = conjugate_gradient(lambda u: r2.reshape(-1, *([1] * (u.dim() - 1))) * task.A(task.At(u)) + sy2 * u,
                               y - task.A(x0), self.cg_iters)
        return task.At(v)

    def surrogate(self, prior, task, svd, sv, y, x, t, cond, var):
        """⟨x̂0(x), sg(v)⟩ per sample, v the weighted residual at x̂0: its gradient is the VJP vᵀ ∂x̂0/∂x."""
        _, x0 = prior.predict(x, t, cond)
        v = self.weighted_residual(task, svd, sv, y, x0.detach(), var).detach()
        return (x0 * v).flatten(1).sum(1), x0

    def solve(self, prior, task, y, gens, cond=None):
        use_svd = self.inverse == "svd" or (self.inverse == "auto" and task.has_svd)
        svd, sv, _ = svd_coefficients(task, y) if use_svd else (None, None, None)
        grid = pairs(timesteps(prior.T, self.steps, self.spacing))
        x = self.initial_noise(prior, gens, y)
        if self.init == "pinv":
            a_T = prior.abar(grid[0][0], x)
            x = a_T.sqrt() * task.pinv(y) + (1 - a_T).sqrt() * x
        replace = self.replace_observed and "mask" in task.provides
        for t, s in grid:
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            g, x0 = loss_grad(lambda v: self.surrogate(prior, task, svd, sv, y, v, t, cond, 1 - a_t), x, aux=True)
            with torch.no_grad():
                x0 = x0 + self.scale * (1 - a_t) / a_t.sqrt() * g
                if self.clip_x0 and not prior.is_latent:
                    x0 = x0.clamp(-1, 1)
                if replace:
                    x0 = paste_observed(task, x0, y)
                eps = eps_from_x0(x, x0, a_t)
                noise = sample_noise(gens, x) if self.eta > 0 and s >= 0 else None
                x = ddim_step(x, eps, x0, a_t, a_s, self.eta, noise)
        return prior.decode(x)
