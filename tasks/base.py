"""Task = forward operator + noise model. Operator parameters (masks, kernels) are frozen per image.

A task object holds its configuration; `draw(ids, seed)` returns the per-image parameters as a dict
of tensors with a leading batch dimension, and `bind(params)` gives a copy whose operator uses them.
Solvers only ever see bound tasks.
"""
from __future__ import annotations

import copy
import math

import torch

from core.errors import ConfigError
from tasks.noise import Noise, make_noise



def pixels(value, size: int, what: str) -> int:
    """A length given in pixels (an integer >= 0) or as a fraction of the image side (a number in (0, 1)),
    so one default fits 16, 64, 256 and 512 px while presets keep published absolute sizes."""
    v = float(value)
    if 0 < v < 1:
        return max(1, round(v * size))
    if v < 0 or v != int(v):
        raise ConfigError(f"{what} must be a whole number of pixels or a fraction of the image side in (0, 1), "
                          f"got {value!r}; fix it in the task config.")
    return int(v)


def odd_pixels(value, size: int, what: str, floor: int = 1) -> int:
    """A kernel width: an odd whole number of pixels, or a fraction of the image side in (0, 1) rounded to
    the odd number in [v - 1, v + 1) (so 61/256 gives 61 at 256 px, 123 at 512), at least `floor` and at most
    the largest odd number <= size (a fraction never asks for a kernel wider than the image)."""
    v = float(value)
    if not 0 < v < 1:
        return pixels(value, size, what)
    n = max(2 * math.floor(v * size / 2) + 1, int(floor))
    return min(n, size if size % 2 else size - 1)


def length(value, size: int, what: str, floor: float = 0.0) -> float:
    """A real-valued length (e.g. a blur's sigma): pixels (a number >= 1), or a fraction of the image side in
    (0, 1), scaled and then at least `floor` pixels."""
    v = float(value)
    if 0 < v < 1:
        return max(v * size, float(floor))
    if not v >= 1:
        raise ConfigError(f"{what} must be a length in pixels (>= 1) or a fraction of the image side in (0, 1), "
                          f"got {value!r}; fix it in the task config.")
    return v

class Task:
    name = "task"
    linear = False

    def __init__(self, image_shape, noise=None):
        self.image_shape = tuple(int(s) for s in image_shape)
        self.noise: Noise = make_noise(noise)
        self.params: dict[str, torch.Tensor] = {}
        self._cache: dict = {}  # derived from params (e.g. the SVD); a bound task's params never change
        self.device, self.dtype = None, None  # where `to` placed this task (None: where it was built)
        self._host = None  # the task `to` moved this one from: its SVD is computed there, then moved once

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
        bound._cache = {}
        bound._host = None
        return bound

    def to(self, device, dtype=None) -> "Task":
        """This task with its params and every tensor it holds (kernels, resize matrices, tables) on
        `device`, floating ones in `dtype`; its SVD (`cached_svd`) is computed on the host and moved
        once, so the operator and its SVD copy nothing between devices per call."""
        bound = self.bind({k: place(v, device, dtype) for k, v in self.params.items()})
        for name, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(bound, name, place(v, device, dtype))
        bound._host = self._host or self
        bound.device, bound.dtype = torch.device(device), dtype
        return bound

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


def place(t: torch.Tensor, device, dtype=None) -> torch.Tensor:
    """t on device; a floating t in dtype (a complex one in dtype's complex counterpart); indices keep theirs."""
    if dtype is None or not (t.is_floating_point() or t.is_complex()):
        return t.to(device=device)
    if t.is_complex():
        dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return t.to(device=device, dtype=dtype)


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

    def to(self, device, dtype=None) -> "SVD":
        """A copy whose factors, index tensors and singular values live on device (floating ones in dtype)."""
        out = copy.copy(self)
        for name, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(out, name, place(v, device, dtype))
        return out

    def A(self, x):
        """U diag(s) Vᵀ x, to check a decomposition against its operator."""
        s = self.singulars()
        c = self.Vt(x)[:, : s.shape[1]] * s
        return self.U(torch.nn.functional.pad(c, (0, self.m - c.shape[1])))


def numerical_zeros(s: torch.Tensor, m: int, d: int) -> torch.Tensor:
    """Singular values below eps·max(m, d)·s_max are round-off (the rule of numpy's matrix_rank): make them 0
    so that pinv does not divide by noise."""
    tol = torch.finfo(s.dtype).eps * max(m, d) * s.amax(dim=1, keepdim=True)
    return torch.where(s > tol, s, torch.zeros_like(s))


class DenseSVD(SVD):
    """The SVD of the dense matrix of each sample's operator (torch.linalg.svd): the fallback for
    linear tasks without a structured SVD, on images of at most DENSE_SVD_MAX values."""

    def __init__(self, task: "LinearTask"):
        n = max((v.shape[0] for v in task.params.values()), default=1)
        us, ss, vs = [], [], []
        for i in range(n):
            one = task.index([i]) if task.params else task
            M = one.matrix(torch.float64)
            u, s, vh = torch.linalg.svd(M, full_matrices=True)
            us.append(u)
            ss.append(s)
            vs.append(vh.T)
        self.shape, self.y_shape = task.image_shape, task.measurement_shape()
        self.u, self.v = torch.stack(us), torch.stack(vs)  # [B, m, m], [B, d, d]
        self.m, d = self.u.shape[1], self.v.shape[1]
        self.s = numerical_zeros(torch.stack(ss), self.m, d)

    def _mats(self, t, mat):
        return mat.to(t).expand(t.shape[0], -1, -1) if mat.shape[0] == 1 else mat.to(t)

    def Vt(self, x):
        return torch.einsum("bd,bdk->bk", x.flatten(1), self._mats(x, self.v))

    def V(self, c):
        return torch.einsum("bk,bdk->bd", c, self._mats(c, self.v)).reshape(c.shape[0], *self.shape)

    def Ut(self, y):
        return torch.einsum("bm,bmk->bk", y.flatten(1), self._mats(y, self.u))

    def U(self, c):
        out = torch.einsum("bk,bmk->bm", c, self._mats(c, self.u))
        return out.reshape(c.shape[0], *self.y_shape)

    def singulars(self):
        return self.s


class SeparableSVD(SVD):
    """A = Mh ⊗ Mw acting on every channel (Y = Mh X Mwᵀ): with Mh = U1 S1 V1ᵀ and Mw = U2 S2 V2ᵀ,
    A = (U1 ⊗ U2)(S1 ⊗ S2)(V1 ⊗ V2)ᵀ. Coefficients V1ᵀ X V2 are flattened with the h×w block that meets
    the singular values s1 s2ᵀ first (per channel), the rest after."""

    def __init__(self, mh: torch.Tensor, mw: torch.Tensor, image_shape):
        C, H, W = self.shape = tuple(image_shape)
        u1, s1, v1h = torch.linalg.svd(mh.double(), full_matrices=True)
        u2, s2, v2h = torch.linalg.svd(mw.double(), full_matrices=True)
        self.u1, self.v1, self.u2, self.v2 = u1, v1h.T, u2, v2h.T
        self.h, self.w = mh.shape[0], mw.shape[0]
        self.m = C * self.h * self.w
        lead = torch.zeros(C, H, W, dtype=torch.bool)
        lead[:, : min(self.h, H), : min(self.w, W)] = True
        self.perm = torch.cat([lead.flatten().nonzero()[:, 0], (~lead).flatten().nonzero()[:, 0]])
        s = torch.zeros(self.h, self.w, dtype=torch.float64)
        s[: len(s1), : len(s2)] = s1[:, None] * s2[None, :]
        s = s[: min(self.h, H), : min(self.w, W)].expand(C, -1, -1).reshape(1, -1)
        self.s = numerical_zeros(s, self.m, C * H * W)

    def Vt(self, x):
        c = self.v1.to(x).T @ x @ self.v2.to(x)
        return c.flatten(1)[:, self.perm.to(x.device)]

    def V(self, c):
        full = torch.empty_like(c).index_copy_(1, self.perm.to(c.device), c).reshape(c.shape[0], *self.shape)
        return self.v1.to(c) @ full @ self.v2.to(c).T

    def Ut(self, y):
        return (self.u1.to(y).T @ y @ self.u2.to(y)).flatten(1)

    def U(self, c):
        y = c.reshape(c.shape[0], self.shape[0], self.h, self.w)
        return self.u1.to(c) @ y @ self.u2.to(c).T

    def singulars(self):
        return self.s


DENSE_SVD_MAX = 4096  # image values; a 4096² float64 SVD takes seconds on a CPU


class LinearTask(Task):
    linear = True

    @property
    def has_svd(self) -> bool:
        """Every linear task has an SVD; without a structured one we offer the dense one on small images."""
        return math.prod(self.image_shape) <= DENSE_SVD_MAX

    def At(self, y: torch.Tensor) -> torch.Tensor:
        """The true adjoint Aᵀ, by autograd unless a task gives a closed form."""
        x = torch.zeros((y.shape[0], *self.image_shape), dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.A(x), x, grad_outputs=y)
        return g

    def svd(self) -> SVD | None:
        """The dense fallback (per sample) on small images; structured tasks override this."""
        return DenseSVD(self) if self.has_svd else None

    def measurement_shape(self) -> tuple:
        """The shape of one measurement A(x), without its batch dimension."""
        one = self.index([0]) if self.params else self
        x = torch.zeros((1, *self.image_shape), dtype=torch.float64)
        return tuple(one.to("cpu", torch.float64).A(x).shape[1:])

    def cached_svd(self) -> SVD | None:
        """`svd()` computed once per bound task: solvers call pinv every step, and the dense fallback
        costs a per-sample d×d SVD (0.5 s for 8 reflect-padded motion-blurred 16×16 images)."""
        if "svd" not in self._cache:
            svd = self._host.cached_svd() if self._host is not None else self.svd()
            if svd is not None and self.device is not None:
                svd = svd.to(self.device, self.dtype)
            self._cache["svd"] = svd
        return self._cache["svd"]

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse A⁺y (through the SVD where the task has one)."""
        svd = self.cached_svd()
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
