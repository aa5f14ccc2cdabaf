"""Per-image fidelity metrics on [0,1]-clipped images (never min-max normalised)."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, data range 1 on [0,1]."""
    return peak_signal_noise_ratio(to01(x_hat), to01(x), data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, σ 1.5), data range 1 on [0,1]."""
    return structural_similarity_index_measure(to01(x_hat), to01(x), data_range=1.0, reduction="none")
