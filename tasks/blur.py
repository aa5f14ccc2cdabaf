"""Deblurring: A(x) = k ⋆ x, one k×k kernel per image shared over channels, stored in params["kernel"].

`⋆` is cross-correlation, as torch's conv2d and the DPS/DAPS `Blurkernel` module compute it (it only
matters for asymmetric kernels such as motion blur). Boundaries:
- `reflect`: the image is mirror-padded by k//2 (edge not repeated, torch/`nn.ReflectionPad2d`) and
  convolved 'valid' (DPS, DAPS, InverseBench). The adjoint comes from autograd.
- `circular`: periodic convolution, computed by FFT (DiffPIR's 'wrap'). A circulant is diagonal in
  the Fourier basis, which gives an exact SVD at any size (`CirculantSVD`).

Sizes, as the masks' (tasks.base.pixels): `kernel_size` is an odd number of pixels or a fraction of the
shorter image side (rounded to an odd width, tasks.base.odd_pixels); a Gaussian's `sigma` is pixels (>= 1) or
a fraction of the side in (0, 1), never below 1 px (a narrower blur is nearly the identity; a sub-pixel sigma
cannot be asked for), and a fractional window
always holds the truncated Gaussian (2·int(truncate·σ + 0.5) + 1 taps). The task defaults are the published
61 px and σ 3.0 at 256 px as fractions (61/256, 3/256): 9 px / σ 1.0 at 16 px, 15 / 1.0 at 64, 61 / 3.0 at
256, 123 / 6.0 at 512. Presets give the published pixels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.base import SVD, LinearTask, SeparableSVD, length, numerical_zeros, odd_pixels
from core.errors import ConfigError

BOUNDARIES = ("reflect", "circular")


def kernel_spectrum(kernel: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Eigenvalues λ [B, H, W] (complex) of circular cross-correlation with kernel [B, k, k]:
    with g the kernel wrapped so that its centre sits at (0, 0), y[n] = Σ_j g[j] x[n + j], so
    Ŷ = conj(ĝ) X̂."""
    k = kernel.shape[-1]
    g = torch.zeros(kernel.shape[0], H, W, dtype=kernel.dtype, device=kernel.device)
    g[:, :k, :k] = kernel
    g = torch.roll(g, shifts=(-(k // 2), -(k // 2)), dims=(1, 2))
    return torch.fft.fft2(g).conj()


class CirculantSVD(SVD):
    """SVD of a real circulant A = F* diag(λ) F with real, orthonormal flat coefficients.

    The orthonormal DFT X = F x of a real image is Hermitian (X₋ω = conj Xω). The real orthonormal
    basis takes, per channel, Xω at self-conjugate frequencies (ω = -ω: DC, Nyquist; λ real there)
    and √2·Re Xω, √2·Im Xω for one frequency of each pair {ω, -ω}. In these coordinates A acts as
    |λω| times a rotation by arg λω, so V = that basis, U = the same basis rotated by the phase
    λ/|λ| (absorbed into U), and the singular values are |λ| (each pair's twice).
    """

    def __init__(self, lam: torch.Tensor, image_shape):
        C, H, W = self.shape = tuple(image_shape)
        self.m = C * H * W
        lin = torch.arange(H * W).reshape(H, W)
        conj = lin[(-torch.arange(H)) % H][:, (-torch.arange(W)) % W].flatten()
        lin = lin.flatten()
        self.self_idx, self.half_idx = (lin == conj).nonzero()[:, 0], (lin < conj).nonzero()[:, 0]
        self.conj_half = conj[self.half_idx]
        mag = lam.abs().flatten(1)  # [B, HW]
        self.phase = torch.where(mag > 0, lam.flatten(1) / mag.clamp_min(1e-300), torch.ones_like(lam.flatten(1)))
        s_self = mag[:, self.self_idx].repeat(1, C)
        s_half = mag[:, self.half_idx].repeat(1, C)
        self.s = numerical_zeros(torch.cat([s_self, s_half, s_half], dim=1), self.m, self.m)

    def _flat(self, X):  # Hermitian spectrum [B, C, HW] -> real coefficients [B, CHW]
        B = X.shape[0]
        half = X[..., self.half_idx.to(X.device)] * math.sqrt(2)
        return torch.cat([X[..., self.self_idx.to(X.device)].real.reshape(B, -1),
                          half.real.reshape(B, -1), half.imag.reshape(B, -1)], dim=1)

    def _unflat(self, c):  # real coefficients [B, CHW] -> Hermitian spectrum [B, C, HW]
        B, C = c.shape[0], self.shape[0]
        ns, nh = len(self.self_idx), len(self.half_idx)
        cs = c[:, : C * ns].reshape(B, C, ns)
        re = c[:, C * ns: C * (ns + nh)].reshape(B, C, nh)
        im = c[:, C * (ns + nh):].reshape(B, C, nh)
        X = torch.zeros(B, C, self.shape[1] * self.shape[2], dtype=torch.complex128 if c.dtype == torch.float64
                        else torch.complex64, device=c.device)
        half = torch.complex(re, im) / math.sqrt(2)
        X[..., self.self_idx.to(c.device)] = cs.to(X.dtype)
        X[..., self.half_idx.to(c.device)] = half
        X[..., self.conj_half.to(c.device)] = half.conj()
        return X

    def _fft(self, x):
        return torch.fft.fft2(x, norm="ortho").flatten(2)

    def _ifft(self, X):
        return torch.fft.ifft2(X.reshape(X.shape[0], *self.shape), norm="ortho").real

    def _phase(self, t):
        return self.phase.to(t.device)[:, None, :]

    def Vt(self, x):
        return self._flat(self._fft(x))

    def V(self, c):
        return self._ifft(self._unflat(c))

    def Ut(self, y):
        return self._flat(self._fft(y) * self._phase(y).conj().to(torch.complex128 if y.dtype == torch.float64
                                                                  else torch.complex64))

    def U(self, c):
        X = self._unflat(c)
        return self._ifft(X * self._phase(c).to(X.dtype))

    def singulars(self):
        return self.s


class ConvTask(LinearTask):
    """Blur by per-image kernels params["kernel"] [B, k, k]; subclasses say how kernels are drawn."""

    def __init__(self, image_shape, noise=None, kernel_size: float = 61, boundary: str = "reflect", floor: int = 1):
        super().__init__(image_shape, noise)
        _, H, W = self.image_shape
        self.kernel_size, self.boundary = odd_pixels(kernel_size, min(H, W), "task.kernel_size", floor), boundary
        if boundary not in BOUNDARIES:
            raise ConfigError(f"blur boundary must be one of {BOUNDARIES}, not {boundary!r}; set task.boundary.")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"blur kernel_size must be odd and positive (got {kernel_size}); set task.kernel_size "
                              "to an odd number.")
        if self.kernel_size > min(H, W):
            raise ConfigError(f"a {self.kernel_size}-pixel blur kernel is larger than the {H}x{W} image; "
                              "reduce task.kernel_size.")

    @property
    def kernel(self) -> torch.Tensor:
        return self.params["kernel"]

    def A(self, x):
        k, B, C = self.kernel.to(x), x.shape[0], x.shape[1]
        if self.boundary == "circular":
            lam = kernel_spectrum(k, *x.shape[-2:])[:, None]
            return torch.fft.ifft2(torch.fft.fft2(x) * lam).real
        p = self.kernel_size // 2
        xp = F.pad(x, (p, p, p, p), mode="reflect")
        if k.shape[0] == 1:  # one kernel for the whole batch (e.g. building the dense matrix)
            return F.conv2d(xp, k.expand(C, -1, -1)[:, None], groups=C)
        out = F.conv2d(xp.reshape(1, B * C, *xp.shape[-2:]), k.repeat_interleave(C, dim=0)[:, None], groups=B * C)
        return out.reshape(B, C, *x.shape[-2:])

    def At(self, y):
        if self.boundary == "circular":
            lam = kernel_spectrum(self.kernel.to(y), *y.shape[-2:])[:, None]
            return torch.fft.ifft2(torch.fft.fft2(y) * lam.conj()).real
        return super().At(y)

    @property
    def has_svd(self):
        return self.boundary == "circular" or super().has_svd

    def svd(self):
        if self.boundary == "circular":
            return CirculantSVD(kernel_spectrum(self.kernel.double(), *self.image_shape[1:]), self.image_shape)
        return super().svd()

    def describe(self):
        return {"kernel_size": self.kernel_size, "boundary": self.boundary}


def gaussian_kernel_1d(size: int, sigma: float, truncate: float | None = 4.0, dtype=torch.float64) -> torch.Tensor:
    """Sampled Gaussian, zero beyond radius int(truncate·σ + 0.5) (scipy's gaussian_filter rule), normalised."""
    r = torch.arange(size, dtype=dtype) - size // 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    if truncate is not None:
        g = torch.where(r.abs() <= int(truncate * sigma + 0.5), g, torch.zeros_like(g))
    return g / g.sum()


class GaussianBlur(ConvTask):
    """Gaussian blur, kernel = outer(g, g) of a normalised sampled Gaussian g (sums to 1).

    DPS/DAPS build their 61×61, σ = 3.0 kernel with scipy.ndimage.gaussian_filter on a centred delta,
    i.e. a sampled Gaussian truncated at radius int(4σ + 0.5) = 12 and normalised: `truncate: 4.0`
    reproduces it; `truncate: null` keeps the whole window. Separable, so the reflect-padded operator
    is Bh ⊗ Bw (1-D reflect-padded convolutions) and has an exact SVD at any size.
    """

    name = "deblur_gauss"

    def __init__(self, image_shape, noise=None, kernel_size: float = 61, sigma: float = 3.0,
                 boundary: str = "reflect", truncate: float | None = 4.0):
        if not sigma > 0:
            raise ConfigError(f"Gaussian blur sigma must be > 0, got {sigma}; set task.sigma.")
        self.sigma = length(sigma, min(tuple(image_shape)[1:]), "task.sigma", floor=1.0)  # px, or a fraction: >= 1 px
        support = 2 * int(truncate * self.sigma + 0.5) + 1 if truncate is not None else 1
        super().__init__(image_shape, noise, kernel_size, boundary, floor=support)
        self.truncate = truncate
        self.g = gaussian_kernel_1d(self.kernel_size, self.sigma, truncate)

    def draw(self, ids, seed):
        k = torch.outer(self.g, self.g)  # float64, so the separable SVD matches it to round-off
        return {"kernel": k.expand(len(ids), -1, -1).clone()}

    has_svd = True

    def _matrix_1d(self, n):
        """The n×n matrix of 1-D reflect-padded correlation with g."""
        p = self.kernel_size // 2
        eye = F.pad(torch.eye(n, dtype=torch.float64)[:, None], (p, p), mode="reflect")
        return F.conv1d(eye, self.g[None, None])[:, 0].T.contiguous()

    def svd(self):
        if self.boundary == "circular":
            return super().svd()
        _, H, W = self.image_shape
        return SeparableSVD(self._matrix_1d(H), self._matrix_1d(W), self.image_shape)

    def describe(self):
        return {**super().describe(), "kernel": "gaussian", "sigma": self.sigma, "truncate": self.truncate}
