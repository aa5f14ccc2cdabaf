"""Null-text inversion (Mokady, Hertz, Aberman, Pritch, Cohen-Or; CVPR 2023), reconstruction round trip
as in the official prompt-to-prompt notebook, on the `inversion` task (y is the image).

    z*_0 = E(y);  z*_{i+1} = DDIM_{i→i+1}(z*_i; ε_c(z*_i, t_{i+1}))       (pivot: conditional only, S NFEs)
    z̄ = z*_S;  ∅ = embedding of ""
    for i = S … 1 (j = S − i):
        ε_c = ε(z̄, t_i; c)                                                 (1 NFE)
        Adam on ∅ (warm-started from the previous step), lr = lr·(1 − j/100), ≤ inner iterations:
            ε̂ = ε(z̄, t_i; ∅) + w (ε_c − ε(z̄, t_i; ∅))                   (1 NFE + 1 VJP w.r.t. ∅)
            loss = mean (z*_{i−1} − DDIM_{i→i−1}(z̄; ε̂))²;  stop when loss < tol + j·tol_growth
        z̄ = DDIM_{i→i−1}(z̄; ε̂ with the optimised ∅)                       (1 NFE)
    return D(z̄)

Editing (task=edit; prompt-to-prompt's prompt swap, without its cross-attention control): a second
chain from z*_S follows the target prompt with the same optimised nulls,
        z^e ← DDIM_{i→i−1}(z^e; ε(z^e, t_i; ∅_i) + w (ε(z^e, t_i; c_target) − ε(z^e, t_i; ∅_i)))   (2 NFE)
and its end is returned instead of the reconstruction.

w is the model's guidance scale (model.guidance_scale, 7.5 in the paper; `solver.cfg_scale` overrides
it); the condition is the image's caption, or "" when there is none. Early stopping is per sample (a stopped sample's ∅ is frozen) so a
result does not depend on the batch. Cost: S + Σ_steps (2 + iterations) NFEs and one VJP per iteration.
"""
from __future__ import annotations

import torch

from models.base import Condition
from solvers.base import Solver
from solvers.common import ddim_step, edit_target, levels, loss_grad
from core.errors import ConfigError


class NullTextInversion(Solver):
    name = "null_text"
    edits = True
    needs = frozenset({"latent", "identity"})

    def __init__(self, steps: int = 50, inner: int = 10, lr: float = 1e-2, tol: float = 1e-5,
                 tol_growth: float = 2e-5, spacing: str = "adm",
                 cfg_scale: float | None = None):
        self.set_cfg_scale(cfg_scale)
        if steps < 1 or inner < 0 or not lr > 0:
            raise ConfigError(f"null-text inversion needs steps >= 1, inner >= 0, lr > 0; got {steps}, {inner}, {lr}; "
                              "set solver.steps/inner/lr.")
        self.steps, self.inner, self.lr = int(steps), int(inner), float(lr)
        self.tol, self.tol_growth, self.spacing = float(tol), float(tol_growth), spacing

    def solve(self, prior, task, y, gens, cond=None):
        cond = self.condition(prior.embed([""]) if cond is None else cond)
        target = edit_target(prior, task, cond) if "edit" in task.provides else None
        return prior.decode(self.latent(prior, prior.encode(y), cond, target))

    def latent(self, prior, z0, cond, target=None):
        """The reconstruction of latent z0 (target None), or its edit towards the `target` condition."""
        edit = target is not None
        only_c = cond.with_scale(1.0)
        w = prior.cfg_scale(cond)
        ts = levels(prior.T, self.steps, self.spacing)
        with torch.no_grad():
            pivot = [z0]
            for i in range(self.steps):
                z = pivot[-1]
                eps = prior.eps(z, ts[i + 1], only_c)
                pivot.append(ddim_step(z, eps, None, prior.abar(ts[i], z), prior.abar(ts[i + 1], z)))
        z = z_edit = pivot[-1]
        B = z.shape[0]
        null = cond.uncond.expand(B, *cond.uncond.shape[1:]).clone()
        for j, i in enumerate(range(self.steps, 0, -1)):
            t, a_t, a_p = ts[i], prior.abar(ts[i], z), prior.abar(ts[i - 1], z)

            with torch.no_grad():
                e_c = prior.eps(z, t, only_c)

            def guided(null_emb, z=z, t=t, e_c=e_c, a_t=a_t, a_p=a_p):
                e_u = prior.eps(z, t, Condition(null_emb, null_emb, 1.0))
                return ddim_step(z, e_u + w * (e_c - e_u), None, a_t, a_p)

            null = null.detach().requires_grad_(True)
            opt = torch.optim.Adam([null], lr=self.lr * (1 - j / 100))
            done = torch.zeros(B, dtype=torch.bool, device=z.device)
            def rec(null_emb, guided=guided, target=pivot[i - 1]):  # per-sample loss, twice: (loss, aux)
                value = (guided(null_emb) - target).square().flatten(1).mean(1)
                return value, value

            for _ in range(self.inner):
                frozen = null.detach().clone()
                null.grad, loss = loss_grad(rec, null, aux=True)  # ∇_∅ Σ loss (1 NFE + 1 VJP), w.r.t. ∅ only
                opt.step()
                with torch.no_grad():  # a sample that met its tolerance keeps its ∅
                    null.copy_(torch.where(done[:, None, None], frozen, null))
                done = done | (loss < self.tol + j * self.tol_growth)
                if done.all():
                    break
            with torch.no_grad():
                z = guided(null.detach())
                if edit:
                    e = prior.eps(z_edit, t, Condition(target.cond, null.detach(), w))
                    z_edit = ddim_step(z_edit, e, None, a_t, a_p)
        return z_edit if edit else z
