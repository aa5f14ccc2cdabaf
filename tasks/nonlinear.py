"""Nonlinear operators: phase retrieval, HDR clipping, JPEG-like quantisation. No adjoint, no SVD."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.base import Task
from core.errors import ConfigError


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT (fastMRI's fft2c): ifftshift, fft2 (norm='ortho'), fftshift."""
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


class PhaseRetrieval(Task):
    """y = |F_c(pad(x))|: Fourier magnitudes of the zero-padded image (DPS, DAPS, RED-diff).

    Oversampling o pads int(o/8·H) pixels on each side (o = 2: 64 px on 256, 384×384 measurements).
    `to01: true` maps x to (x+1)/2 first (DAPS); DPS and RED-diff use x in [-1,1]. Without it, y
    cannot tell x from -x (nor from shifts and flips), which is why papers report best-of-4 runs.
    """

    name = "phase_retrieval"
    linear = False

    def __init__(self, image_shape, noise=None, oversample: float = 2.0, to01: bool = False):
        super().__init__(image_shape, noise)
        if not oversample >= 0:
            raise ConfigError(f"phase-retrieval oversample must be >= 0, got {oversample}; set task.oversample.")
        self.oversample, self.to01 = float(oversample), bool(to01)
        self.pad = int(self.oversample / 8.0 * self.image_shape[1])

    def A(self, x):
        if self.to01:
            x = (x + 1) / 2
        p = self.pad
        return fft2c(F.pad(x, (p, p, p, p))).abs()

    def display(self, y):
        """Log-magnitudes scaled to [-1, 1] and resized to the image."""
        z = torch.log1p(y)
        z = z / z.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
        return F.interpolate(z * 2 - 1, size=self.image_shape[1:], mode="bilinear", antialias=True)

    def describe(self):
        return {"oversample": self.oversample, "pad": self.pad, "to01": self.to01}


class HDR(Task):
    """High dynamic range recovery: A(x) = clip(scale·x, -1, 1) (DAPS scale 2; RED-diff clip(x/0.5))."""

    name = "hdr"
    linear = False

    def __init__(self, image_shape, noise=None, scale: float = 2.0):
        super().__init__(image_shape, noise)
        if not scale > 0:
            raise ConfigError(f"HDR scale must be > 0, got {scale}; set task.scale.")
        self.scale = float(scale)

    def A(self, x):
        return (self.scale * x).clamp(-1, 1)

    def describe(self):
        return {"scale": self.scale}


# The JPEG standard's luminance quantisation table (ITU-T T.81, Annex K, Table K.1).
LUMA_Q = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float64)


def dct_matrix(n: int = 8, dtype=torch.float64) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (coefficients = D x, D Dᵀ = I)."""
    k = torch.arange(n, dtype=dtype)[:, None]
    i = torch.arange(n, dtype=dtype)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def quality_table(quality: int) -> torch.Tensor:
    """The luminance table scaled by the IJG quality rule (50 = the table itself, 100 = all ones)."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    return torch.floor((LUMA_Q * scale + 50) / 100).clamp(1, 255)


class JPEGQuant(Task):
    """A JPEG-like codec with no weights: per channel, 8×8 block DCT of x on the 0..255 scale (level
    shift 128), division by the quality-scaled luminance table, rounding, de-quantisation, inverse
    DCT, back to [-1, 1]. No chroma conversion or subsampling and no entropy coding (lossless anyway).
    y is the decoded image. Rounding has zero gradient almost everywhere; gradient-based solvers need
    a surrogate, which this task does not provide (deliberately: the operator is the exact one).
    """

    name = "jpeg"
    linear = False

    def __init__(self, image_shape, noise=None, quality: int = 50):
        super().__init__(image_shape, noise)
        self.quality = int(quality)
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality must be in 1..100, got {quality}; set task.quality.")
        _, H, W = self.image_shape
        if H % 8 or W % 8:
            raise ConfigError(f"JPEG quantisation works on 8x8 blocks and {H}x{W} is not a multiple of 8; "
                              "use another image size.")
        self.q = quality_table(self.quality)
        self.d = dct_matrix(8)

    def A(self, x):
        B, C, H, W = x.shape
        d, q = self.d.to(x), self.q.to(x)
        v = (x + 1) * 127.5 - 128
        blocks = v.reshape(B, C, H // 8, 8, W // 8, 8).transpose(3, 4)  # [..., 8, 8] blocks
        coef = d @ blocks @ d.T
        coef = torch.round(coef / q) * q
        out = (d.T @ coef @ d).transpose(3, 4).reshape(B, C, H, W)
        return (out + 128) / 127.5 - 1

    def describe(self):
        return {"quality": self.quality, "block": 8, "table": "luma_T81_K1"}
