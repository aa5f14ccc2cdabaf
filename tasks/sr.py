"""Super-resolution. f×f average pooling (DDRM, DDNM, RED-diff): exact SVD, A Aᵀ = I / f².
Anti-aliased bicubic (DPS/DAPS MATLAB-style, or torch/InverseBench): separable, exact Kronecker SVD."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.base import SVD, LinearTask, SeparableSVD, check_divides
from core.errors import ConfigError


def block_basis(f: int, dtype=torch.float64) -> torch.Tensor:
    """An orthogonal f²×f² matrix whose first row is the constant 1/f (the block mean direction)."""
    m = torch.eye(f * f, dtype=dtype)
    m[:, 0] = 1.0
    q, _ = torch.linalg.qr(m)
    q = q * torch.sign(q[0, 0])
    return q.T.contiguous()


class PoolSVD(SVD):
    """Each f×f block is rotated by `block_basis`; the mean coefficients (singular value 1/f) come first."""

    def __init__(self, f: int, image_shape):
        self.f, self.shape = f, tuple(image_shape)
        C, H, W = self.shape
        self.h, self.w = H // f, W // f
        self.m = C * self.h * self.w
        self.basis = block_basis(f)
        self.s = torch.full((1, self.m), 1.0 / f, dtype=self.basis.dtype)

    def _blocks(self, x):
        B, C, f = x.shape[0], self.shape[0], self.f
        return x.reshape(B, C, self.h, f, self.w, f).permute(0, 1, 2, 4, 3, 5).reshape(B, self.m, f * f)

    def Vt(self, x):
        coef = self._blocks(x) @ self.basis.to(x).T
        return torch.cat([coef[..., 0], coef[..., 1:].reshape(x.shape[0], -1)], dim=1)

    def V(self, c):
        B, C, f = c.shape[0], self.shape[0], self.f
        coef = torch.cat([c[:, : self.m, None], c[:, self.m:].reshape(B, self.m, f * f - 1)], dim=2)
        blocks = coef @ self.basis.to(c)
        return blocks.reshape(B, C, self.h, self.w, f, f).permute(0, 1, 2, 4, 3, 5).reshape(B, *self.shape)

    def Ut(self, y):
        return y.flatten(1)

    def U(self, c):
        return c.reshape(c.shape[0], self.shape[0], self.h, self.w)

    def singulars(self):
        return self.s


class AvgPoolSR(LinearTask):
    name = "sr_avgpool"
    has_svd = True

    def __init__(self, image_shape, noise=None, factor: int = 4):
        super().__init__(image_shape, noise)
        self.factor = int(factor)
        for size in self.image_shape[1:]:
            check_divides(size, self.factor, f"average-pooling SR x{self.factor}")

    def A(self, x):
        return F.avg_pool2d(x, self.factor)

    def At(self, y):
        return F.interpolate(y, scale_factor=self.factor, mode="nearest") / self.factor ** 2

    def pinv(self, y):
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def svd(self):
        return PoolSVD(self.factor, self.image_shape)

    def display(self, y):
        return self.pinv(y)

    def describe(self):
        return {"factor": self.factor, "downsampler": "avgpool"}


def cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel; a = -0.5 is MATLAB's and PIL's choice (support [-2, 2])."""
    t = t.abs()
    near = (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    far = a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def matlab_resize_matrix(n_in: int, factor: int, dtype=torch.float64) -> torch.Tensor:
    """The [n_in/factor, n_in] matrix of MATLAB's imresize(x, 1/factor, 'bicubic') along one axis.

    Output pixel i sits at input coordinate (i + 0.5)·factor - 0.5. Downscaling stretches the kernel
    by `factor` (anti-aliasing: support 4·factor taps), weights are normalised per output pixel,
    and indices outside the image are mirrored with the edge repeated (MATLAB's 'symmetric').
    """
    n_out = n_in // factor
    centre = (torch.arange(n_out, dtype=dtype) + 0.5) * factor - 0.5
    half = 2 * factor  # kernel half-width in input pixels
    taps = torch.arange(-half - 1, half + 2, dtype=dtype)
    j = torch.floor(centre)[:, None] + taps[None, :]  # [n_out, taps] input positions
    w = cubic((centre[:, None] - j) / factor)
    w = w / w.sum(dim=1, keepdim=True)
    idx = j.long() % (2 * n_in)
    idx = torch.where(idx >= n_in, 2 * n_in - 1 - idx, idx)  # ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    m = torch.zeros(n_out, n_in, dtype=dtype)
    return m.scatter_add_(1, idx, w)


def torch_resize_matrix(n_in: int, factor: int, dtype=torch.float64) -> torch.Tensor:
    """The 1-D matrix of F.interpolate(mode='bicubic', antialias=True) (PIL's weights: a = -0.5,
    stretched kernel, taps outside the image dropped and the rest renormalised), read off the
    operator: rows constant along the other axis resize to Mh e_k (weights sum to 1 per output pixel).
    The other axis is 4·factor wide because torch mis-resizes width-1 inputs."""
    w = 4 * factor
    basis = torch.eye(n_in, dtype=dtype)[:, None, :, None].expand(n_in, 1, n_in, w).contiguous()
    out = F.interpolate(basis, size=(n_in // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)
    return out[:, 0, :, 0].T.contiguous()


class BicubicSR(LinearTask):
    """Anti-aliased bicubic down-sampling by an integer factor; separable, so A = Mh ⊗ Mw has an exact SVD.

    `kernel: matlab` is MATLAB's imresize as reimplemented by Shocher and used by DPS and DAPS
    (`Resizer`, 256 → 64 for ×4); `kernel: torch` is F.interpolate(mode='bicubic', antialias=True),
    the torchvision-style resize InverseBench uses. The two differ only near the border (mirrored vs
    dropped taps).

    `At` is the true adjoint (Mhᵀ Y Mw) unless `transpose: dps`, which reproduces the DPS code's
    "transpose": nearest-neighbour ×factor up-sampling. That is NOT the adjoint of A (nor a pseudo-
    inverse); it only exists to rerun DPS-code solvers that call it. describe() records which.
    """

    name = "sr_bicubic"
    has_svd = True

    def __init__(self, image_shape, noise=None, factor: int = 4, kernel: str = "matlab", transpose: str = "adjoint"):
        super().__init__(image_shape, noise)
        self.factor, self.kernel, self.transpose = int(factor), kernel, transpose
        if kernel not in ("matlab", "torch"):
            raise ConfigError(f"bicubic kernel must be 'matlab' or 'torch', not {kernel!r}; set task.kernel.")
        if transpose not in ("adjoint", "dps"):
            raise ConfigError(f"transpose must be 'adjoint' or 'dps', not {transpose!r}; set task.transpose.")
        for size in self.image_shape[1:]:
            check_divides(size, self.factor, f"bicubic SR x{self.factor}")
        build = matlab_resize_matrix if kernel == "matlab" else torch_resize_matrix
        _, H, W = self.image_shape
        self.mh, self.mw = build(H, self.factor), build(W, self.factor)

    def A(self, x):
        if self.kernel == "torch":
            size = (self.image_shape[1] // self.factor, self.image_shape[2] // self.factor)
            return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        return self.mh.to(x) @ x @ self.mw.to(x).T

    def At(self, y):
        if self.transpose == "dps":
            return F.interpolate(y, scale_factor=self.factor, mode="nearest")
        return self.mh.to(y).T @ y @ self.mw.to(y)

    def svd(self):
        return SeparableSVD(self.mh, self.mw, self.image_shape)

    def display(self, y):
        return F.interpolate(y, scale_factor=self.factor, mode="nearest")

    def describe(self):
        return {"factor": self.factor, "downsampler": f"bicubic_{self.kernel}",
                "transpose": "dps_nearest_upsampling (not an adjoint)" if self.transpose == "dps" else "adjoint"}
