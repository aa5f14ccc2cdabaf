"""DDNM / DDNM+ — Denoising Diffusion Null-space Model (Wang, Yu, Zhang; ICLR 2023), Algorithms 1–2.

    x_T ~ N(0, I)
    walk the grid with time travel (each chunk of `travel_length` steps run `travel_repeat` times):
        x̂0 = E[x0 | x_t]                                   (1 NFE, no VJP)
        DDNM   x̂0' = x̂0 - A⁺(A x̂0 - y)                     (range-null-space projection)
               x_s = √ᾱ_s x̂0' + √(1-ᾱ_s) (η ξ + √(1-η²) ε̂)
        DDNM+  per SVD coefficient i (x̄ = Vᵀx, ȳ_i = (Uᵀy)_i/s_i), with c = √(1-ᾱ_s):
               λ_i = min(1, c s_i / (√ᾱ_s σ_y))               (1 where s_i = 0 is irrelevant: no correction)
               x̄0'_i = x̄0_i + λ_i (ȳ_i - x̄0_i)
               γ_i = √(c² - (√ᾱ_s λ_i σ_y/s_i)²)             (noise left to inject; c where s_i = 0)
               x̄_s = √ᾱ_s x̄0' + γ_i (η ξ + √(1-η²) ε̄)
        re-noising back in time: x_t = √(ᾱ_t/ᾱ_s) x_s + √(1-ᾱ_t/ᾱ_s) ξ

DDNM+ with σ_y = 0 is DDNM. Defaults (official wyhuai/DDNM @ 00b58ea): 100 steps, η = 0.85,
travel_length = 1, travel_repeat = 1 (no travel).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import pairs, renoise, safe_div, sample_noise, svd_coefficients, time_travel, timesteps
from core.errors import ConfigError


class DDNM(Solver):
    name = "ddnm"
    needs_because = {"svd": "DDNM+ needs a task with an SVD; {task} has none here: set solver.plus=false."}

    def __init__(self, steps: int = 100, eta: float = 0.85, plus: bool = False, travel_length: int = 1,
                 travel_repeat: int = 1, spacing: str = "leading"):
        if not 0 <= eta <= 1:
            raise ConfigError(f"DDNM eta must be in [0, 1], got {eta}; set solver.eta.")
        self.steps, self.eta, self.plus = int(steps), float(eta), bool(plus)
        self.travel_length, self.travel_repeat, self.spacing = int(travel_length), int(travel_repeat), spacing
        time_travel([], self.travel_length, self.travel_repeat)  # validates the travel settings

    @property
    def needs(self) -> frozenset:
        return frozenset({"linear", "pixel"} | ({"svd"} if self.plus else set()))

    def _step_plain(self, task, y, x0, eps, a_s, noise):
        x0 = x0 - task.pinv(task.A(x0) - y)
        return a_s.sqrt() * x0 + (1 - a_s).sqrt() * (self.eta * noise + (1 - self.eta ** 2) ** 0.5 * eps)

    def _step_plus(self, svd, sv, ybar, sy, x0, eps, a_s, noise):
        a = a_s.reshape(-1, 1)
        c = (1 - a).sqrt()
        ny = safe_div(torch.full_like(sv, sy), sv)  # σ_y/s_i
        lam = torch.where(sv > 0, (safe_div(c * torch.ones_like(sv), a.sqrt() * ny)).clamp(max=1.0) if sy > 0
                          else torch.ones_like(sv), torch.zeros_like(sv))
        x0b = svd.Vt(x0)
        x0b = x0b + lam * (ybar - x0b)
        gamma = (c ** 2 - (a.sqrt() * lam * ny) ** 2).clamp_min(0).sqrt()
        mix = self.eta * svd.Vt(noise) + (1 - self.eta ** 2) ** 0.5 * svd.Vt(eps)
        return svd.V(a.sqrt() * x0b + gamma * mix)

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        if self.plus:
            svd, sv, uy = svd_coefficients(task, y)
            ybar = safe_div(uy, sv)
        x = self.initial_noise(prior, gens, y)
        walk = time_travel(pairs(timesteps(prior.T, self.steps, self.spacing)), self.travel_length, self.travel_repeat)
        for t, s in walk:
            a_t, a_s = prior.abar(t, x), prior.abar(s, x)
            noise = sample_noise(gens, x)
            if s > t:  # time travel: back to the noisier level
                x = renoise(x, a_t, a_s, noise)
                continue
            eps, x0 = prior.predict(x, t, cond)
            if s < 0:
                noise = torch.zeros_like(noise)
            if self.plus:
                x = self._step_plus(svd, sv, ybar, task.sigma_y, x0, eps, a_s, noise)
            else:
                x = self._step_plain(task, y, x0, eps, a_s, noise)
        return prior.decode(x)
