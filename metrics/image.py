"""Per-image fidelity metrics on [0,1]-clipped images (never min-max normalised).

Written out here (not imported from torchmetrics, whose import costs seconds of CPU at every start):
PSNR = 10·log10(R² / MSE) per image, and SSIM (Wang et al. 2004) with a Gaussian window of σ = 1.5,
11 taps (int(3.5σ + 0.5)·2 + 1), K1 = 0.01, K2 = 0.03, data range R = 1, local statistics over the
image reflect-padded by 5 px and averaged over every pixel: torchmetrics' structural_similarity_index_measure
defaults, to which tests/test_image_metrics.py pins both (1e-6 on random images).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03


def to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image, data range 1 on [0,1]."""
    a, b = to01(x_hat), to01(x)
    mse = (a - b).square().flatten(1).sum(1) / a[0].numel()
    return (2 * math.log(data_range) - torch.log(mse)) * (10 / math.log(10))


def gaussian_window(sigma: float = SSIM_SIGMA, dtype=torch.float32, device=None) -> torch.Tensor:
    """The normalised 2-D Gaussian window [n, n], n = 2·int(3.5σ + 0.5) + 1 taps."""
    n = int(3.5 * sigma + 0.5) * 2 + 1
    r = torch.arange((1 - n) / 2, (1 + n) / 2, 1, dtype=dtype, device=device)
    g = torch.exp(-((r / sigma) ** 2) / 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, σ 1.5), data range 1 on [0,1]."""
    a, b = to01(x_hat), to01(x)
    C = a.shape[1]
    w = gaussian_window(SSIM_SIGMA, a.dtype, a.device)
    p = w.shape[-1] // 2
    a, b = F.pad(a, (p, p, p, p), mode="reflect"), F.pad(b, (p, p, p, p), mode="reflect")
    stats = F.conv2d(torch.cat([a, b, a * a, b * b, a * b]), w.expand(C, 1, -1, -1), groups=C).split(a.shape[0])
    mu_a, mu_b = stats[0], stats[1]
    var_a = (stats[2] - mu_a ** 2).clamp_min(0)
    var_b = (stats[3] - mu_b ** 2).clamp_min(0)
    cov = stats[4] - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
