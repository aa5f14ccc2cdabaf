"""ReSample — hard data consistency with latent diffusion (Song, Kwon, Zhang, Hu, Qu, Shen; ICLR 2024),
as in the official `soominkwon/resample` code (`ldm/models/diffusion/ddim.py::resample_sampling`).

    z_T ~ N(0, I);  N grid points t_0 > … > t_{N−1};  step i goes t = t_i → s = t_{i+1};  r = N − 1 − i
    for each step:
        ε̂, ẑ0 = prior(z_t)                                              (1 NFE, with grad)
        z̃0    = (z_t − √(1−ᾱ_t) ε̂)/√ᾱ_t  (tweedie: paper)  |  (z_t − (1−ᾱ_t) ε̂)/√ᾱ_t  (tweedie: code)
        z'    = DDIM(z_t → z_s, η = 0; ε̂, ẑ0) − c·ᾱ_t ∇_{z_t} ‖y − A D(z̃0)‖     (DPS step, c = dps_scale)
        if HDC at r (r % skip = 0, 0 < r ≤ N − (splits − hdc_splits)·L, L = N // splits):
            ẑ0(z') = z̃0 of the last of `travel` unguided DDIM evaluations from z' at t_{i+1}, t_{i+2}, …
                     ("time travel"; travel = 0 reuses z̃0(z_t))
            pixel stage (r ≥ latent_splits·L):  x* = argmin_x ‖y − A x‖²  from D(ẑ0);   z* = E(x*)
            latent stage (r < latent_splits·L): z* = argmin_z ‖y − A D(z)‖²  from ẑ0
            z_s = stochastic resample of z* towards z' at noise level ᾱ_s (below)
        else:  z_s = z'
    z_0 ← argmin_z ‖y − A D(z)‖² from z_0   (final_opt)
    return D(z_0)

Stochastic resampling (code `stochastic_resample`, the paper's resampling step): the product of the
stochastic encoding N(√ᾱ_s z*, (1−ᾱ_s) I) and N(z', γ_t I), with γ_t = gamma·(1−ᾱ_s)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_s)
(gamma times DDPM's posterior variance β̃; gamma = 40):
    z_s = (γ_t √ᾱ_s z* + (1−ᾱ_s) z') / (γ_t + 1 − ᾱ_s) + √(γ_t (1−ᾱ_s) / (γ_t + 1 − ᾱ_s)) ξ
The code's variable `sigma` holds this variance; the paper (as we recall it: its text was not retrievable
here) writes it σ_t², with the same mean and variance.

Both inner problems: AdamW (weight decay 0.01, torch's default, which the code leaves on) on the
per-sample MSE over the measurement's entries. As in the code, each iteration steps and then checks the
loss it started from: a sample stops when that loss is below `tol` (code: MSE < eps² = 1e-6) or, latent
only, above its loss `window` iterations earlier (code: 200). A stopped sample keeps its variable and is
no longer decoded, so results and costs (k iterations: k decodes + k decoder VJPs) are per sample.

Defaults (the official run, `sample_condition.py` + the sampler): 500 DDIM steps. The script passes
`ddim_use_original_steps=True`, but `posterior_sampler` swallows it in **kwargs and calls the sampler
with False, so the 500-step LDM grid (1, 3, …, 999) runs, not all 1000 steps; `spacing: leading` gives
0, 2, …, 998 here (the LDM grid is shifted by one and ends at ᾱ_0, ours at ᾱ = 1). DPS scale 0.5·ᾱ_t
(the YAML `scale` is unused), HDC every 10 steps in the last two thirds, 5 time-travel steps, pixel
AdamW lr 1e-2 ≤ 2000 iterations, latent AdamW lr 5e-3 ≤ 500 iterations with the 200-iteration window,
gamma 40, final latent optimisation on.

Cost (per sample): N NFEs + N UNet VJPs + N decodes + N decoder VJPs (DPS step; none when dps_scale = 0);
each HDC step adds min(travel, r) NFEs (no VJP), and 1 decode + 1 encode (pixel stage; the iterations
only touch A) or k decodes + k decoder VJPs (latent stage, k iterations run); the final optimisation
adds its iterations as decodes + decoder VJPs; plus 1 decode of the output. NFEs double under CFG.

Difference from the code, of one grid step: its time-travel loop evaluates the UNet with the label of the
next grid point while converting with the current one (we use matching labels).
"""
from __future__ import annotations

import torch

from solvers.base import Solver
from solvers.common import ddim_step, loss_grad, pairs, residual, sample_noise, timesteps
from core.errors import ConfigError

TWEEDIES = ("code", "paper")


def resample_gamma(a_t, a_s, gamma: float):
    """γ_t = gamma·(1−ᾱ_s)/(1−ᾱ_t)·(1 − ᾱ_t/ᾱ_s): the variance given to the unconditional sample z'."""
    return gamma * (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)


def stochastic_resample(z_star, z_prime, a_s, var, noise=None):
    """A draw of N(√ᾱ_s z*, (1−ᾱ_s) I)·N(z', var I), normalised: precision-weighted mean, harmonic variance."""
    w = 1 - a_s
    mean = (var * a_s.sqrt() * z_star + w * z_prime) / (var + w)
    return mean if noise is None else mean + (var * w / (var + w)).sqrt() * noise


class ReSample(Solver):
    name = "resample"
    needs = frozenset({"latent"})

    def __init__(self, steps: int = 500, dps_scale: float = 0.5, tweedie: str = "code", skip: int = 10,
                 splits: int = 3, hdc_splits: int = 2, latent_splits: int = 1, travel: int = 5,
                 gamma: float = 40.0, pixel_iters: int = 2000, pixel_lr: float = 1e-2, latent_iters: int = 500,
                 latent_lr: float = 5e-3, window: int = 200, tol: float = 1e-6, weight_decay: float = 0.01,
                 final_opt: bool = True, spacing: str = "leading"):
        if tweedie not in TWEEDIES:
            raise ConfigError(f"ReSample tweedie must be one of {TWEEDIES}, not {tweedie!r}; set solver.tweedie.")
        if not (int(skip) >= 1 and int(splits) >= 1 and 0 <= int(latent_splits) <= int(hdc_splits) <= int(splits)):
            raise ConfigError(f"ReSample needs skip >= 1, splits >= 1 and 0 <= latent_splits <= hdc_splits <= splits, got "
                              f"skip={skip}, splits={splits}, hdc_splits={hdc_splits}, latent_splits={latent_splits}; "
                              "set solver.skip/splits/hdc_splits/latent_splits.")
        if min(int(travel), int(pixel_iters), int(latent_iters), int(window)) < 0:
            raise ConfigError(f"ReSample travel, pixel_iters, latent_iters and window must be >= 0, got {travel}, "
                              f"{pixel_iters}, {latent_iters}, {window}; set solver.travel/pixel_iters/latent_iters/window.")
        if not (gamma > 0 and pixel_lr > 0 and latent_lr > 0 and dps_scale >= 0 and tol >= 0 and weight_decay >= 0):
            raise ConfigError(f"ReSample needs gamma > 0, pixel_lr > 0, latent_lr > 0, dps_scale >= 0, tol >= 0 and "
                              f"weight_decay >= 0, got {gamma}, {pixel_lr}, {latent_lr}, {dps_scale}, {tol}, {weight_decay}; "
                              "set solver.gamma/pixel_lr/latent_lr/dps_scale/tol/weight_decay.")
        self.steps, self.dps_scale, self.tweedie, self.skip = int(steps), float(dps_scale), tweedie, int(skip)
        self.splits, self.hdc_splits, self.latent_splits = int(splits), int(hdc_splits), int(latent_splits)
        self.travel, self.gamma = int(travel), float(gamma)
        self.pixel_iters, self.pixel_lr = int(pixel_iters), float(pixel_lr)
        self.latent_iters, self.latent_lr = int(latent_iters), float(latent_lr)
        self.window, self.tol, self.weight_decay = int(window), float(tol), float(weight_decay)
        self.final_opt, self.spacing = bool(final_opt), spacing

    # -- schedule ----------------------------------------------------------------------------------
    def stage(self, r: int, n: int) -> str | None:
        """'pixel', 'latent' or None for the step with r steps left after it (the code's `index`)."""
        split = n // self.splits
        if self.hdc_splits == 0 or r <= 0 or r % self.skip or r > n - (self.splits - self.hdc_splits) * split:
            return None
        return "latent" if r < self.latent_splits * split or self.latent_splits == self.hdc_splits else "pixel"

    def x0_estimate(self, z, eps, x0, a):
        """z̃0: Tweedie's mean (paper), or the code's (z − (1−ᾱ)ε̂)/√ᾱ."""
        return x0 if self.tweedie == "paper" else (z - (1 - a) * eps) / a.sqrt()

    # -- hard data consistency ---------------------------------------------------------------------
    def minimise(self, var, loss_fn, iters: int, lr: float, window: int = 0):
        """AdamW on var, per sample: loss_fn(v, idx) gives the losses of rows idx (v = var[idx]). As in the
        code, the step is taken and then the loss it started from is checked: a sample stops once that loss
        is < tol or (window > 0) above its loss `window` iterations before; a stopped sample is frozen."""
        var = var.detach().clone()  # the optimiser's own leaf
        opt = torch.optim.AdamW([var], lr=lr, weight_decay=self.weight_decay)
        B = var.shape[0]
        active = torch.ones(B, dtype=torch.bool, device=var.device)
        history = []

        def rows_loss(v, idx):
            loss = loss_fn(v if len(idx) == B else v[idx], idx)
            return loss, loss

        for it in range(iters):
            idx = active.nonzero().squeeze(1)
            var.grad, loss = loss_grad(lambda v: rows_loss(v, idx), var, aux=True)  # noqa: B023 (zero on stopped rows)
            keep = var.clone()
            opt.step()
            # stopped samples keep their value (AdamW's decay would still move them)
            var.copy_(torch.where(active.reshape(-1, *([1] * (var.dim() - 1))), var, keep))
            full = torch.full((B,), float("inf"), dtype=loss.dtype, device=var.device)
            full[idx] = loss
            history.append(full)
            stop = full < self.tol
            if window and it >= window:
                stop = stop | (history[it - window] < full)
            active = active & ~stop
            if not active.any():  # the one host sync per iteration: the code's early stop is a decision
                break
        return var

    @staticmethod
    def mse(task, y, x, idx):
        """Per-sample mean squared measurement error of the rows idx (x holds only those rows)."""
        if len(idx) != y.shape[0]:  # the operator's per-image parameters are indexed by the full batch
            x = torch.zeros(y.shape[0], *x.shape[1:], dtype=x.dtype, device=x.device).index_put((idx,), x)
            return (y - task.A(x))[idx].flatten(1).square().mean(1)
        return (y - task.A(x)).flatten(1).square().mean(1)

    def pixel_opt(self, prior, task, y, z0):
        """z* = E(argmin_x ‖y − A x‖², from D(ẑ0)): only A is differentiated."""
        with torch.no_grad():
            x = prior.decode(z0)
        x = self.minimise(x, lambda v, idx: self.mse(task, y, v, idx), self.pixel_iters, self.pixel_lr)
        with torch.no_grad():
            return prior.encode(x)

    def latent_opt(self, prior, task, y, z0):
        """z* = argmin_z ‖y − A D(z)‖² from ẑ0 (decoder VJPs)."""
        return self.minimise(z0, lambda v, idx: self.mse(task, y, prior.decode(v), idx), self.latent_iters,
                             self.latent_lr, self.window)

    def travelled_x0(self, prior, z, ts, i, cond, fallback):
        """z̃0 after time travel: unguided DDIM from z at t_{i+1}; the last of min(travel, r) evaluations."""
        n = min(self.travel, len(ts) - 1 - i)  # never past the grid's last point
        est = fallback
        for k in range(n):
            t, a = ts[i + 1 + k], prior.abar(ts[i + 1 + k], z)
            eps, x0 = prior.predict(z, t, cond)
            est = self.x0_estimate(z, eps, x0, a)
            if k < n - 1:
                z = ddim_step(z, eps, x0, a, prior.abar(ts[i + 2 + k], z))
        return est

    # -- the sampler -------------------------------------------------------------------------------
    def guidance_loss(self, prior, task, y, z, t, a_t, cond):
        """‖y − A D(z̃0)‖ per sample at z_t, with (ε̂, ẑ0, z̃0) of this evaluation (z̃0 may depend on z_t itself)."""
        eps, x0 = prior.predict(z, t, cond)
        est = self.x0_estimate(z, eps, x0, a_t)
        return residual(prior, task, y, est), (eps, x0, est)

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        ts = timesteps(prior.T, self.steps, self.spacing)
        n = len(ts)
        z = self.initial_noise(prior, gens, y)
        guided = self.dps_scale > 0
        for i, (t, s) in enumerate(pairs(ts)):
            a_t, a_s = prior.abar(t, z), prior.abar(s, z)
            if guided:
                grad, (eps, x0, est) = loss_grad(lambda v: self.guidance_loss(prior, task, y, v, t, a_t, cond), z, aux=True)  # noqa: B023
            else:
                eps, x0 = prior.predict(z, t, cond)
                est = self.x0_estimate(z, eps, x0, a_t)
            z_prime = ddim_step(z, eps, x0, a_t, a_s)
            if guided:
                z_prime = z_prime - self.dps_scale * a_t * grad
            stage = self.stage(n - 1 - i, n)
            if stage is None:
                z = z_prime
                continue
            z0 = self.travelled_x0(prior, z_prime, ts, i, cond, est)
            z_star = self.pixel_opt(prior, task, y, z0) if stage == "pixel" else self.latent_opt(prior, task, y, z0)
            noise = sample_noise(gens, z)
            z = stochastic_resample(z_star, z_prime, a_s, resample_gamma(a_t, a_s, self.gamma), noise)
        if self.final_opt:
            z = self.latent_opt(prior, task, y, z)
        return prior.decode(z)
