"""Round-trip errors of inversion (task=inversion): how far the regenerated image, and its latent, are from
what the prior can represent, so that a latent prior's VAE error is not charged to the inversion solver.

    image   ref = D(E(x)) on latent priors (x on pixel priors);  rt_img_rel = ‖x̂ − ref‖/‖ref‖, rt_img_maxabs
    latent  z = E(x), ẑ = E(x̂) (latent priors only);            rt_lat_rel = ‖ẑ − z‖/‖z‖,   rt_lat_maxabs

Computed in the solver's dtype (float64 runs keep float64 here), per sample.
"""
from __future__ import annotations

import torch


def _rel_max(a: torch.Tensor, ref: torch.Tensor, prefix: str) -> dict:
    d = (a - ref).flatten(1)
    r = ref.flatten(1).norm(dim=1).clamp_min(torch.finfo(ref.dtype).tiny)
    return {f"{prefix}_rel": (d.norm(dim=1) / r).double().cpu(), f"{prefix}_maxabs": d.abs().amax(dim=1).double().cpu()}


@torch.no_grad()
def roundtrip_errors(prior, x_hat: torch.Tensor, x: torch.Tensor) -> dict:
    """x_hat, x [M,C,H,W] (x repeated per sample) -> {column: [M]}."""
    x = x.to(x_hat.dtype)
    if not prior.is_latent:
        return _rel_max(x_hat, x, "rt_img")
    z = prior.encode(x)
    out = _rel_max(x_hat, prior.decode(z).to(x_hat.dtype), "rt_img")
    out.update(_rel_max(prior.encode(x_hat).to(z.dtype), z, "rt_lat"))
    return out
