"""Inpainting: A(x) = m ⊙ x with a 0/1 mask shared over channels; y keeps the full image shape.

As in the DPS and DAPS code, noise is added to every pixel, holes included (it carries no
information about x there, so posteriors are unaffected).
"""
from __future__ import annotations

import math

import torch

from tasks.base import SVD, LinearTask
from tasks.errors import ConfigError
from tasks.rng import generator, randint


class MaskSVD(SVD):
    """A mask is diagonal: V = U = the permutation that puts each sample's observed values first."""

    def __init__(self, mask: torch.Tensor, image_shape):
        full = mask.expand(mask.shape[0], *image_shape).flatten(1)
        self.shape = tuple(image_shape)
        self.m = full.shape[1]
        self.perm = torch.argsort(-full, dim=1, stable=True)
        self.s = full.gather(1, self.perm)

    def Vt(self, x):
        return x.flatten(1).gather(1, self.perm.expand(x.shape[0], -1))

    def V(self, c):
        out = torch.zeros_like(c).scatter_(1, self.perm.expand(c.shape[0], -1), c)
        return out.reshape(c.shape[0], *self.shape)

    Ut, U = Vt, V

    def singulars(self):
        return self.s


class MaskTask(LinearTask):
    """Any 0/1 mask operator; subclasses say how the per-image mask is drawn."""

    has_svd = True

    @property
    def mask(self) -> torch.Tensor:
        return self.params["mask"]

    def A(self, x):
        return x * self.mask

    def At(self, y):
        return y * self.mask

    def pinv(self, y):
        return y * self.mask

    def svd(self):
        return MaskSVD(self.mask, self.image_shape)

    def display(self, y):
        return y * self.mask


class BoxInpainting(MaskTask):
    """A square hole of side `box`: at a random position at least `margin` from the border (DPS:
    128 px, margin 16, on 256 px; DAPS: margin 32) or centred; per image or one mask for all."""

    name = "inpaint_box"

    def __init__(self, image_shape, noise=None, box: int = 8, margin: int = 1,
                 placement: str = "random", shared: bool = False):
        super().__init__(image_shape, noise)
        _, H, W = self.image_shape
        self.box, self.margin, self.placement, self.shared = int(box), int(margin), placement, bool(shared)
        if placement not in ("random", "centred"):
            raise ConfigError(f"box placement must be 'random' or 'centred', not {placement!r}; set task.placement.")
        if self.box < 1 or self.margin < 0:
            raise ConfigError(f"box size must be >= 1 and margin >= 0 (got box={box}, margin={margin}); fix task.box/task.margin.")
        # DPS draws the top-left corner with randint(margin, size - margin - box): upper bound exclusive.
        if placement == "random" and min(H, W) - self.margin - self.box <= self.margin:
            raise ConfigError(f"a {self.box}-pixel box with margin {self.margin} does not fit a {H}x{W} image; "
                              "reduce task.box or task.margin.")
        if placement == "centred" and self.box > min(H, W):
            raise ConfigError(f"a {self.box}-pixel box is larger than the {H}x{W} image; reduce task.box.")

    def draw(self, ids, seed):
        _, H, W = self.image_shape
        masks = []
        for i in ids:
            if self.placement == "centred":
                top, left = (H - self.box) // 2, (W - self.box) // 2
            else:
                g = generator(seed, self.name, "shared" if self.shared else i)
                top = randint(g, self.margin, H - self.margin - self.box)
                left = randint(g, self.margin, W - self.margin - self.box)
            m = torch.ones(1, H, W)
            m[:, top: top + self.box, left: left + self.box] = 0
            masks.append(m)
        return {"mask": torch.stack(masks)}

    def describe(self):
        return {"box": self.box, "margin": self.margin, "placement": self.placement, "shared_mask": self.shared,
                "hole_fraction": self.box ** 2 / math.prod(self.image_shape[1:])}
