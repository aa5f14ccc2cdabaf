"""A pretrained diffusion model seen as a denoiser, with its cost counted where it is incurred.

Counting happens here, never in solvers: `eps`/`predict` add one NFE per sample per call (two
under classifier-free guidance), and the network output is wrapped in an autograd node whose
backward adds one VJP per sample each time a gradient flows back through the network.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from core.errors import ConfigError


@dataclass
class Cost:
    """Totals over samples: a call on a batch of B adds B to `nfe`. Divide by the batch for per-sample cost."""

    nfe: float = 0
    vjp: float = 0
    encode: float = 0
    decode: float = 0
    decode_vjp: float = 0
    encode_vjp: float = 0

    def reset(self):
        for f in fields(self):
            setattr(self, f.name, 0)

    def snapshot(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts one VJP per sample of the gradient it carries."""

    @staticmethod
    def forward(ctx, x, cost, attr):
        ctx.cost, ctx.attr = cost, attr
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        setattr(ctx.cost, ctx.attr, getattr(ctx.cost, ctx.attr) + g.shape[0])
        return g, None, None


def counted(out: torch.Tensor, cost: Cost, attr: str) -> torch.Tensor:
    if torch.is_grad_enabled() and out.requires_grad:
        return _CountBackward.apply(out, cost, attr)
    return out


def prompt_list(prompts) -> list[str]:
    """The list of prompts `embed` takes (one per image; None items = "", the null prompt) as strings."""
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise TypeError(f"embed takes a list of prompts (one per image), not {type(prompts).__name__}")
    return [("" if p is None else str(p)) for p in prompts]


@dataclass(frozen=True)
class Condition:
    """What `Prior.embed` returns and a solver passes back as `cond`.

    cond    the conditional embeddings, one row per image (or one row for all): hidden states [n, seq, dim],
            mixture logits [n, 1, K] or class labels [n]
    uncond  the unconditional (null) embedding, one row [1, ...]; None where the model has none (no CFG)
    scale   the classifier-free guidance scale w of ε̂ = ε̂(∅) + w (ε̂(c) − ε̂(∅)); None: the model's
            `guidance_scale`; 1: the conditional branch alone (1 NFE)
    """

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    scale: float | None = None

    def with_scale(self, scale) -> "Condition":
        return replace(self, scale=None if scale is None else float(scale))

    def replace(self, **changes) -> "Condition":
        return replace(self, **changes)


def per_sample(h: torch.Tensor, B: int) -> torch.Tensor:
    """Condition rows for B samples: one row for all, or one row per image repeated for its samples."""
    if h.shape[0] == B:
        return h
    if B % h.shape[0]:
        raise ConfigError(f"{h.shape[0]} conditions cannot be spread over a batch of {B} samples.")
    return h.repeat_interleave(B // h.shape[0], dim=0)


def linear_alphas_cumprod(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """ADM/DDPM 'linear' schedule, in float64."""
    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


class Prior(torch.nn.Module):
    """VP diffusion prior on `state_shape` tensors, images of `image_shape` in [-1,1].

    Subclasses implement `network(x_t, t, cond)` (the raw output: ε or v, as `prediction` says).
    `t` is a LongTensor [B] of integer timesteps into `alphas_cumprod`.
    """

    is_latent = False
    exact = False
    prediction = "epsilon"

    def __init__(self, alphas_cumprod: torch.Tensor, image_shape, state_shape=None, name: str = "prior"):
        super().__init__()
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float64), persistent=False)
        self.image_shape = tuple(image_shape)
        self.state_shape = tuple(state_shape or image_shape)
        self.name = name
        self.cost = Cost()
        # the VE view's σ table, on the host: solvers read levels from it without device round-trips
        self._sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt().cpu()
        self.sigmas = self._sigmas.tolist()

    @property
    def T(self) -> int:
        return self.alphas_cumprod.shape[0]

    @property
    def provides(self) -> frozenset:
        caps = {"latent" if self.is_latent else "pixel"}
        if self.exact:
            caps.add("exact")
        return frozenset(caps)

    def describe(self) -> dict:
        return {"model": self.name, "prediction": self.prediction, "T": self.T, **getattr(self, "config", {})}

    # -- schedule ----------------------------------------------------------------------------------
    def abar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t broadcast against `like`; t = -1 means ᾱ = 1 (the clean end of a grid). A Python int t indexes
        the device table directly (no host-to-device copy, so no sync inside a solver loop)."""
        if isinstance(t, int):
            a = self.alphas_cumprod[t] if t >= 0 else torch.ones((), dtype=torch.float64, device=self.alphas_cumprod.device)
            return a.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
        t = torch.as_tensor(t, device=self.alphas_cumprod.device).long().reshape(-1)
        a = torch.where(t >= 0, self.alphas_cumprod[t.clamp_min(0)], torch.ones_like(t, dtype=torch.float64))
        return a.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    # -- the VE / denoiser view (k-diffusion's DiscreteEpsDDPMDenoiser, edm's VPPrecond) ------------
    # x_VE = x_VP/√ᾱ at level σ_t = √((1-ᾱ_t)/ᾱ_t); the denoiser is D(x; σ_t) = x̂0(√ᾱ_t x, t).
    def sigma(self, t, like: torch.Tensor) -> torch.Tensor:
        """σ_t = √((1-ᾱ_t)/ᾱ_t) broadcast against `like` (t = -1: σ = 0)."""
        a = self.abar(t, like)
        return ((1 - a) / a).sqrt()

    def sigma_to_t(self, sigma: float) -> int:
        """The timestep whose σ_t is nearest to σ on a log scale (host-side: no device sync)."""
        return int((self._sigmas.log() - torch.tensor(sigma, dtype=torch.float64).log()).abs().argmin())

    def denoise(self, x, t, cond=None) -> torch.Tensor:
        """D(x; σ_t): the Tweedie mean of x0 given the VE state x at level σ_t (1 network evaluation)."""
        return self.x0(self.abar(t, x).sqrt() * x, t, cond)

    def _t(self, t, x):
        if isinstance(t, int):  # filled on the device: no host-to-device copy per network call
            return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        t = torch.as_tensor(t, device=x.device).long().reshape(-1)
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    # -- the network, counted ----------------------------------------------------------------------
    def network(self, x_t, t, cond=None) -> torch.Tensor:
        raise NotImplementedError

    def _call(self, x_t, t, cond):
        self.cost.nfe += x_t.shape[0] * self.nfe_per_call(cond)
        return counted(self.network(x_t, t, cond), self.cost, "vjp")

    # classifier-free guidance of conditional priors: ε̂ = ε̂(∅) + w (ε̂(c) − ε̂(∅)), 2 NFE per sample
    guidance_scale = 1.0

    def cfg_scale(self, cond) -> float:
        """The CFG scale: the model's, unless the condition carries its own `scale` (1 = conditional only)."""
        return self.guidance_scale if cond is None or cond.scale is None else float(cond.scale)

    def _guided(self, cond) -> bool:
        return cond is not None and cond.uncond is not None and self.cfg_scale(cond) != 1.0

    def nfe_per_call(self, cond) -> int:
        return 2 if self._guided(cond) else 1

    def predict(self, x_t, t, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(ε̂, x̂0) from one network evaluation; x̂0 is the Tweedie mean E[x0 | x_t]."""
        t = self._t(t, x_t)
        out = self._call(x_t, t, cond)
        a = self.abar(t, x_t)
        if self.prediction == "v":
            return (1 - a).sqrt() * x_t + a.sqrt() * out, a.sqrt() * x_t - (1 - a).sqrt() * out
        return out, (x_t - (1 - a).sqrt() * out) / a.sqrt()

    def eps(self, x_t, t, cond=None):
        return self.predict(x_t, t, cond)[0]

    def x0(self, x_t, t, cond=None):
        return self.predict(x_t, t, cond)[1]

    # -- latent interface (identity for pixel priors) ----------------------------------------------
    def encode(self, image):
        return image

    def decode(self, state):
        return state

    def embed(self, prompts: list) -> Condition | None:
        """The condition for a list of prompts, one per image (None or "": the null prompt); None for a prior
        that takes no condition."""
        prompt_list(prompts)
        return None
