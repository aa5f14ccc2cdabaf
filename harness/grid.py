"""Image grids: one column per image; rows are measurement, reconstruction, truth."""
from __future__ import annotations

import torch

from metrics.image import to01


def save_grid(path: str, measurement: torch.Tensor, recon: torch.Tensor, truth: torch.Tensor, scale: int = 4):
    import torchvision  # here, not at the top: its import costs seconds of CPU at every start

    rows = torch.cat([to01(measurement), to01(recon), to01(truth)])
    if scale > 1:
        rows = torch.nn.functional.interpolate(rows, scale_factor=scale, mode="nearest")
    grid = torchvision.utils.make_grid(rows, nrow=len(truth), padding=2, pad_value=1.0)
    torchvision.utils.save_image(grid, path)
