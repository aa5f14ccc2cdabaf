"""RED-diff — A Variational Perspective on Solving Inverse Problems with Diffusion Models
(Mardani, Song, Kautz, Vahdat; ICLR 2024), with the official code's normalisation.

    μ ← A⁺y (linear tasks; `init`; singular values below `pinv_cutoff` dropped, as the DDRM operators
         that the official code uses do for deblurring, ZERO = 3e-2), Adam(μ; lr, betas = (0.9, 0.99))
    for t in the descending grid (ts = range(0, T, T/S) reversed):
        ε ~ N(0, I);  x_t = √ᾱ_t μ + √(1-ᾱ_t) ε
        ε̂ = ε_θ(x_t, t)                                      (1 NFE, no grad: no VJP)
        loss_obs   = ½ mean_j (y - A(μ))_j²                   (mean over measurement entries)
        loss_noise = mean_p sg(ε̂ - ε)_p μ_p                   (mean over pixels; sg = stop-gradient)
        loss = λ w(t) loss_noise + v loss_obs,  w(t) from the SNR weighting (linear: √(1-ᾱ_t)/√ᾱ_t)
        Adam step on μ (the gradient only goes through A)
    return μ as it was before the last Adam step (the official `x0_pred`, the iterate the last loss saw)

Losses are per-sample means summed over the batch, and Adam is elementwise, so a sample's result does
not depend on its batch. Defaults: `reddiff.yaml` (NVlabs/RED-diff @ 66482f2): λ = 0.25, v = 1,
weighting linear, lr = 0.1, 50 steps (exp/default.yaml).
"""
from __future__ import annotations

import math

import torch

from solvers.base import Solver
from solvers.common import loss_grad, safe_div, svd_coefficients, timesteps
from core.errors import ConfigError
from core.rng import randn

WEIGHTINGS = ("linear", "sqrt", "square", "log", "trunc_linear", "power2over3", "const")
INITS = ("pinv", "zeros", "noise")


def snr_weight(kind: str, r: torch.Tensor) -> torch.Tensor:
    """w(t) as a function of snr_inv r = √(1-ᾱ_t)/√ᾱ_t, the prior's VE level σ_t (the official code's weightings)."""
    return {"linear": lambda: r, "sqrt": lambda: r.sqrt(), "square": lambda: r ** 2, "log": lambda: torch.log1p(r),
            "trunc_linear": lambda: r.clamp(max=1.0), "power2over3": lambda: r ** (2 / 3),
            "const": lambda: torch.ones_like(r)}[kind]()


class REDDiff(Solver):
    name = "reddiff"
    needs_because = {"linear": "RED-diff init=pinv needs a linear task; {task} is not: set solver.init=zeros."}

    def __init__(self, steps: int = 50, lr: float = 0.1, lam: float = 0.25, obs_weight: float = 1.0,
                 weighting: str = "linear", init: str = "pinv", pinv_cutoff: float = 3e-2, spacing: str = "leading"):
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"RED-diff weighting must be one of {WEIGHTINGS}, not {weighting!r}; set solver.weighting.")
        if init not in INITS:
            raise ConfigError(f"RED-diff init must be one of {INITS}, not {init!r}; set solver.init.")
        if not lr > 0:
            raise ConfigError(f"RED-diff lr must be > 0, got {lr}; set solver.lr.")
        self.steps, self.lr, self.lam, self.obs_weight = int(steps), float(lr), float(lam), float(obs_weight)
        self.weighting, self.init, self.pinv_cutoff, self.spacing = weighting, init, float(pinv_cutoff), spacing

    @property
    def needs(self) -> frozenset:
        return frozenset({"pixel"} | ({"linear"} if self.init == "pinv" else set()))

    def _init(self, prior, task, y, gens):
        if self.init == "pinv" and self.pinv_cutoff > 0 and task.has_svd:
            svd, s, uy = svd_coefficients(task, y)  # truncated A⁺: singular values below the cutoff count as 0
            return prior.encode(svd.V(safe_div(uy, torch.where(s > self.pinv_cutoff, s, torch.zeros_like(s)))))
        if self.init == "pinv":
            return prior.encode(task.pinv(y))
        if self.init == "noise":
            return self.initial_noise(prior, gens, y)
        return y.new_zeros(y.shape[0], *prior.state_shape)

    def solve(self, prior, task, y, gens, cond=None):
        with torch.no_grad():
            mu = self._init(prior, task, y, gens).detach().clone()
        opt = torch.optim.Adam([mu], lr=self.lr, betas=(0.9, 0.99), weight_decay=0.0)
        n = math.prod(prior.state_shape)
        for t in timesteps(prior.T, self.steps, self.spacing):
            a = prior.abar(t, mu)
            noise = randn(gens, prior.state_shape, dtype=mu.dtype, device=mu.device)
            with torch.no_grad():
                eps = prior.eps(a.sqrt() * mu + (1 - a).sqrt() * noise, t, cond)
            w = self.lam * snr_weight(self.weighting, prior.sigma(t, mu)).reshape(-1)

            def loss(m):  # per sample: λ_t·⟨ε̂ − ε, μ⟩/n (the score term, ε̂ held fixed) + ½‖y − A(D(μ))‖²/m
                loss_obs = 0.5 * (y - task.A(prior.decode(m))).flatten(1).square().mean(1)
                return w * ((eps - noise) * m).flatten(1).sum(1) / n + self.obs_weight * loss_obs

            x0_pred = mu.detach().clone()
            mu.grad = loss_grad(loss, mu)
            opt.step()
        return prior.decode(x0_pred)
