"""Image grids: one column per image; rows are measurement, reconstruction(s), truth, each labelled.

Small images are enlarged by an integer factor up to about 64 px (16-px digits ×4); images of 64 px
or more are shown at their size (8 images of 256 px make a 2 kpx-wide grid, not 8 kpx).
"""
from __future__ import annotations

import torch

from metrics.image import to01

TARGET_PX = 64   # enlarge small images to about this height
LABEL_PX = 150   # width of the label column


def scale_for(h: int) -> int:
    return max(1, TARGET_PX // max(int(h), 1))


def _font(size: int = 12):
    """matplotlib's bundled DejaVu Sans (no system fonts needed), else PIL's bitmap font."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # noqa: BLE001 - any font problem: the built-in font
        return ImageFont.load_default()


def labelled_grid(path: str, rows: list[tuple[str, torch.Tensor]], pad: int = 2):
    """Save a PNG: one labelled row per (label, images [N,C,H,W] in [-1,1])."""
    import numpy as np
    from PIL import Image, ImageDraw

    n = max(len(x) for _, x in rows)
    h, w = rows[-1][1].shape[-2:]  # the truth's size: other rows are resized to it
    s = scale_for(h)
    H, W = h * s, w * s
    canvas = Image.new("RGB", (LABEL_PX + n * (W + pad) + pad, len(rows) * (H + pad) + pad), "white")
    draw, font = ImageDraw.Draw(canvas), _font()
    for i, (label, x) in enumerate(rows):
        top = pad + i * (H + pad)
        text = label if len(label) <= 24 else label[:23] + "…"
        draw.text((4, top + H // 2 - 7), text, fill="black", font=font)
        img = to01(torch.nan_to_num(x.float()))
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        img = img[:, :3]
        if tuple(img.shape[-2:]) != (H, W):
            img = torch.nn.functional.interpolate(img, size=(H, W), mode="nearest")
        for j in range(len(img)):
            arr = (img[j].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            canvas.paste(Image.fromarray(arr), (LABEL_PX + pad + j * (W + pad), top))
    canvas.save(path)


def save_grid(path: str, measurement: torch.Tensor, recon: torch.Tensor, truth: torch.Tensor, label: str = "reconstruction"):
    """grid.png of one run (measurement / reconstruction / truth) and grid.pt with the same tensors, which
    the sweep report stacks into one grid per world (measurement, each solver, truth)."""
    from core.files import atomic_save

    labelled_grid(path, [("measurement", measurement), (label, recon), ("truth", truth)])
    atomic_save({"measurement": measurement.float().cpu(), "recon": recon.float().cpu(), "truth": truth.float().cpu()},
                path[:-4] + ".pt" if path.endswith(".png") else path + ".pt")
