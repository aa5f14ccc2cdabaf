"""Task = forward operator + noise model. Operator parameters (masks, kernels) are frozen per image.

A task object holds its configuration; `draw(ids, seed)` returns the per-image parameters as a dict
of tensors with a leading batch dimension, and `bind(params)` gives a copy whose operator uses them.
Solvers only ever see bound tasks.
"""
from __future__ import annotations

import copy
import math

import torch

from tasks.errors import ConfigError
from tasks.noise import Noise, make_noise


class Task:
    name = "task"
    linear = False

    def __init__(self, image_shape, noise=None):
        self.image_shape = tuple(int(s) for s in image_shape)
        self.noise: Noise = make_noise(noise)
        self.params: dict[str, torch.Tensor] = {}

    # -- capabilities, checked by solvers before any compute -------------------------------------
    @property
    def provides(self) -> frozenset:
        caps = set()
        if self.linear:
            caps.add("linear")
        if self.noise.gaussian:
            caps.add("gaussian_noise")
        if self.has_svd:
            caps.add("svd")
        return frozenset(caps)

    has_svd = False

    @property
    def sigma_y(self) -> float:
        return self.noise.sigma_y

    # -- frozen per-image parameters ---------------------------------------------------------------
    def draw(self, ids, seed: int) -> dict[str, torch.Tensor]:
        """Per-image operator parameters; a function of (task config, id, seed) only."""
        return {}

    def bind(self, params: dict[str, torch.Tensor]) -> "Task":
        bound = copy.copy(self)
        bound.params = dict(params)
        return bound

    def to(self, device, dtype=None) -> "Task":
        return self.bind({k: v.to(device=device, dtype=dtype if v.is_floating_point() else None)
                          for k, v in self.params.items()})

    def repeat(self, n: int) -> "Task":
        """Each image's parameters repeated n times in a row (for n samples per measurement)."""
        return self.bind({k: v.repeat_interleave(n, dim=0) for k, v in self.params.items()})

    def index(self, idx) -> "Task":
        return self.bind({k: v[idx] for k, v in self.params.items()})

    # -- the operator ------------------------------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def measure(self, x: torch.Tensor, gens) -> torch.Tensor:
        return self.noise.add(self.A(x), gens)

    def display(self, y: torch.Tensor) -> torch.Tensor:
        """An image-shaped picture of y for grids."""
        if tuple(y.shape[1:]) == self.image_shape:
            return y
        return torch.nn.functional.interpolate(y, size=self.image_shape[1:], mode="nearest")

    def describe(self) -> dict:
        """Operator parameters for results rows (noise is described separately)."""
        return {}


class SVD:
    """A = U diag(s) Vᵀ, per sample. Coefficients are flat: Vᵀx is [B, d], Uᵀy is [B, m], and the
    first k = s.shape[1] entries of each pair with the singular values s (zeros allowed)."""

    m: int  # measurement dimension

    def Vt(self, x):  # image -> [B, d]
        raise NotImplementedError

    def V(self, c):  # [B, d] -> image
        raise NotImplementedError

    def Ut(self, y):  # measurement -> [B, m]
        raise NotImplementedError

    def U(self, c):  # [B, m] -> measurement
        raise NotImplementedError

    def singulars(self) -> torch.Tensor:  # [B, k], k <= min(m, d)
        raise NotImplementedError

    def A(self, x):
        """U diag(s) Vᵀ x, to check a decomposition against its operator."""
        s = self.singulars()
        c = self.Vt(x)[:, : s.shape[1]] * s
        return self.U(torch.nn.functional.pad(c, (0, self.m - c.shape[1])))


class LinearTask(Task):
    linear = True

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """The true adjoint Aᵀ, by autograd unless a task gives a closed form."""
        x = torch.zeros((y.shape[0], *self.image_shape), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.A(x), x, grad_outputs=y)
        return g

    def svd(self) -> SVD | None:
        return None

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse A⁺y (through the SVD where the task has one)."""
        svd = self.svd()
        if svd is None:
            raise NotImplementedError(f"{self.name} has no closed-form pseudo-inverse")
        s = svd.singulars()
        c = svd.Ut(y)[:, : s.shape[1]]
        inv = torch.where(s > 0, 1.0 / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        d = math.prod(self.image_shape)
        return svd.V(torch.nn.functional.pad(c * inv, (0, d - s.shape[1])))

    def matrix(self, dtype=torch.float64) -> torch.Tensor:
        """The dense [m, d] matrix of a single-image bound task (small images only)."""
        for k, v in self.params.items():
            if v.shape[0] != 1:
                raise ValueError(f"matrix() needs a task bound to one image; param {k} has batch {v.shape[0]}")
        d = math.prod(self.image_shape)
        if d > 16384:
            raise ConfigError(f"a dense matrix of {self.name} on {self.image_shape} images is too large; "
                              "use images of at most 16384 values for exact posteriors.")
        basis = torch.eye(d, dtype=dtype).reshape(d, *self.image_shape)
        task = self.to("cpu", dtype)
        return task.A(basis).reshape(d, -1).T.contiguous()


def check_divides(size: int, factor: int, what: str):
    if factor < 1 or size % factor:
        raise ConfigError(f"{what}: factor {factor} does not divide the image size {size}; "
                          "choose a factor that divides it or another image size.")
