"""Super-resolution by f×f average pooling (DDRM, DDNM, RED-diff): exact SVD, A Aᵀ = I / f²."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.base import SVD, LinearTask, check_divides


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
        return torch.full((1, self.m), 1.0 / self.f, dtype=self.basis.dtype)


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
