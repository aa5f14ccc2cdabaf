"""Motion blur: a random camera-shake trajectory rendered into a k×k kernel, seeded and stored per image.

Our own generator, in the spirit of LeviBorodenko's `motionblur` package that DPS/DAPS/DiffPIR use
(`Kernel(size=(61, 61), intensity=0.5)`): a random walk whose irregularity grows with `intensity`
in [0, 1] (0: a straight stroke; 1: a tangled one), drawn on a canvas super-sampled ×2, downscaled
by 2×2 averaging and normalised to sum 1. It is not bit-compatible with that package (which draws
from numpy's global RNG, a new kernel per run in DPS): ours is a function of (config, image id, seed).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tasks.blur import ConvTask
from core.errors import ConfigError
from core.rng import generator

STEPS = 32  # segments of the trajectory; fine enough that curvature looks smooth at 61 px


def _uniform(gen, n, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def motion_kernel(size: int, intensity: float, gen: torch.Generator) -> torch.Tensor:
    """A [size, size] float64 kernel, non-negative, summing to 1, centred on its centre of mass."""
    S = 2 * size  # super-sampled canvas
    length = S * float(_uniform(gen, 1, 0.3, 0.7))  # path length, in canvas pixels
    # speed and heading wander more with intensity: irregular steps, a random walk of the angle
    steps = length / STEPS * (1 + intensity * _uniform(gen, STEPS, -0.5, 0.5))
    turns = intensity * (math.pi / 4) * torch.randn(STEPS, generator=gen, dtype=torch.float64)
    heading = 2 * math.pi * float(_uniform(gen, 1)) + torch.cumsum(turns, 0)
    vert = torch.cat([torch.zeros(1, 2, dtype=torch.float64),
                      torch.cumsum(torch.stack([steps * heading.cos(), steps * heading.sin()], 1), 0)])
    # points along the path, about 4 per canvas pixel, so the rendered stroke has no gaps
    per = max(2, int(4 * float(steps.max())) + 1)
    t = torch.linspace(0, 1, per, dtype=torch.float64)[None, :, None]
    pts = (vert[:-1, None] + t * (vert[1:] - vert[:-1])[:, None]).reshape(-1, 2)
    weight = (steps[:, None] / per).expand(-1, per).reshape(-1)  # ink ∝ arc length, not sample count
    pts = pts - (pts * weight[:, None]).sum(0) / weight.sum()  # centre of mass at the kernel centre
    reach = pts.abs().max()
    if reach > S / 2 - 2:  # keep the whole path (and its bilinear footprint) on the canvas
        pts = pts * (S / 2 - 2) / reach
    pts = pts + (S - 1) / 2
    # bilinear splat onto the canvas
    canvas = torch.zeros(S, S, dtype=torch.float64)
    base = pts.floor()
    frac = pts - base
    base = base.long()
    for dr in (0, 1):
        for dc in (0, 1):
            w = (frac[:, 0] if dr else 1 - frac[:, 0]) * (frac[:, 1] if dc else 1 - frac[:, 1]) * weight
            canvas.index_put_((base[:, 0] + dr, base[:, 1] + dc), w, accumulate=True)
    k = F.avg_pool2d(canvas[None, None], 2)[0, 0]
    return k / k.sum()


MIN_SIZE = 9  # a kernel_size given as a fraction is at least this wide: a shorter trajectory is hardly a stroke


class MotionBlur(ConvTask):
    """Blur by a random motion kernel per image (61×61, intensity 0.5 in DPS/DAPS/DiffPIR). `kernel_size` is
    pixels or a fraction of the image side (61/256 by default: 9 px at 16, 15 at 64, 61 at 256, 123 at 512),
    at least MIN_SIZE px when it is a fraction; `intensity` is a shape parameter and does not scale."""

    name = "deblur_motion"

    def __init__(self, image_shape, noise=None, kernel_size: float = 61, intensity: float = 0.5,
                 boundary: str = "reflect", shared: bool = False):
        super().__init__(image_shape, noise, kernel_size, boundary, floor=MIN_SIZE)
        if not 0 <= intensity <= 1:
            raise ConfigError(f"motion blur intensity must be in [0, 1], got {intensity}; set task.intensity.")
        self.intensity, self.shared = float(intensity), bool(shared)

    def draw(self, ids, seed):
        kernels = [motion_kernel(self.kernel_size, self.intensity,
                                 generator(seed, self.name, self.kernel_size, self.intensity,
                                           "shared" if self.shared else i))
                   for i in ids]
        return {"kernel": torch.stack(kernels)}

    def describe(self):
        return {**super().describe(), "kernel": "motion", "intensity": self.intensity, "shared_kernel": self.shared}
