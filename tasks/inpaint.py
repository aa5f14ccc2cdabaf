"""Inpainting: A(x) = m ⊙ x with a 0/1 mask shared over channels; y keeps the full image shape.

As in the DPS and DAPS code, noise is added to every pixel, holes included (it carries no
information about x there, so posteriors are unaffected).
"""
from __future__ import annotations

import math

import torch

from tasks.base import SVD, LinearTask, pixels
from core.errors import ConfigError
from core.rng import generator, randint


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
    def provides(self) -> frozenset:
        return super().provides | {"mask"}  # A = m ⊙ x: solvers may use the mask itself (Graikos et al.)

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
    128 px, margin 16, on 256 px; DAPS: margin 32) or centred; per image or one mask for all.
    `box` and `margin` are pixels, or fractions of the shorter side (0.5 and 1/16 give DPS's 128/16 at 256 px)."""

    name = "inpaint_box"

    def __init__(self, image_shape, noise=None, box: float = 0.5, margin: float = 0.0625,
                 placement: str = "random", shared: bool = False):
        super().__init__(image_shape, noise)
        _, H, W = self.image_shape
        if float(box) <= 0:
            raise ConfigError(f"box size must be >= 1 pixel or a fraction in (0, 1), got {box}; fix task.box.")
        self.box_spec, self.margin_spec = box, margin
        self.box, self.margin = pixels(box, min(H, W), "task.box"), pixels(margin, min(H, W), "task.margin")
        self.placement, self.shared = placement, bool(shared)
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


def _fraction_range(p, what: str) -> tuple[float, float]:
    """A fraction p or a range [lo, hi) given in config, validated."""
    scalar = isinstance(p, (int, float))
    if not scalar and len(p) != 2:
        raise ConfigError(f"{what} must be one fraction or a range [lo, hi), got {p}; fix it in the task config.")
    lo, hi = (float(p), float(p)) if scalar else (float(p[0]), float(p[1]))
    if not 0 <= lo <= hi <= 1 or (not scalar and lo == hi):
        raise ConfigError(f"{what} must be a fraction in [0, 1] or a range [lo, hi) with 0 <= lo < hi <= 1, "
                          f"got {p}; fix it in the task config.")
    return lo, hi


class RandomInpainting(MaskTask):
    """A fraction p of pixel locations is missing, the same for all channels. p is fixed or drawn
    uniformly in [lo, hi) per image (DPS paper 0.92, DPS config [0.3, 0.7), DAPS/ReSample
    [0.70, 0.71), DiffPIR 0.5). Exactly round(p·H·W) locations are dropped, chosen without
    replacement (the DPS code samples with replacement, so it drops slightly fewer)."""

    name = "inpaint_random"

    def __init__(self, image_shape, noise=None, p=0.7, shared: bool = False):
        super().__init__(image_shape, noise)
        self.p = p if isinstance(p, (int, float)) else [float(v) for v in p]
        self.lo, self.hi = _fraction_range(p, "random-inpainting fraction task.p")
        self.shared = bool(shared)

    def draw(self, ids, seed):
        _, H, W = self.image_shape
        masks = []
        for i in ids:
            g = generator(seed, self.name, self.lo, self.hi, "shared" if self.shared else i)
            p = self.lo + (self.hi - self.lo) * float(torch.rand(1, generator=g, dtype=torch.float64))
            drop = torch.randperm(H * W, generator=g)[: round(p * H * W)]
            m = torch.ones(H * W)
            m[drop] = 0
            masks.append(m.reshape(1, H, W))
        return {"mask": torch.stack(masks)}

    def describe(self):
        return {"missing": [self.lo, self.hi] if self.hi > self.lo else self.lo, "shared_mask": self.shared}


class FreeFormInpainting(MaskTask):
    """Procedural free-form holes: brush strokes, each a random walk of thick line segments.

    Per image: 1..`strokes` strokes, each of 1..4 segments of length up to `max_length` px with a
    width in [1, `max_width`] px and a heading that turns by up to ±90° per segment. Strokes that
    would push the hole fraction past `hole[1]` are redrawn, and strokes are added until it reaches
    `hole[0]` (at most 100 tries; describe() reports the target, the mask itself is stored).
    """

    name = "inpaint_freeform"

    def __init__(self, image_shape, noise=None, strokes: int = 4, max_width: float = 0.1875,
                 max_length: float = 0.375, hole=(0.1, 0.4)):
        super().__init__(image_shape, noise)
        _, H, W = self.image_shape
        side = min(H, W)  # widths and lengths: pixels, or fractions of the shorter side (3 and 6 px at 16 px)
        self.strokes = int(strokes)
        self.max_width, self.max_length = pixels(max_width, side, "task.max_width"), pixels(max_length, side, "task.max_length")
        self.lo, self.hi = _fraction_range(list(hole), "free-form hole fraction task.hole")
        if self.strokes < 1 or self.max_width < 1 or self.max_length < 1:
            raise ConfigError("free-form strokes, max_width and max_length must be >= 1; fix them in the task config.")
        if self.max_width > min(H, W):
            raise ConfigError(f"brush width {self.max_width} is larger than the {H}x{W} image; reduce task.max_width.")

    def _stroke(self, g, H, W):
        rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                                    indexing="ij")
        u = lambda: float(torch.rand(1, generator=g, dtype=torch.float64))  # noqa: E731
        r, c = u() * H, u() * W
        heading = 2 * math.pi * u()
        width = 1 + u() * (self.max_width - 1)
        hole = torch.zeros(H, W, dtype=torch.bool)
        for _ in range(1 + int(u() * 4)):
            heading += (u() - 0.5) * math.pi
            length = 1 + u() * (self.max_length - 1)
            r2 = min(max(r + length * math.sin(heading), 0.0), H - 1.0)
            c2 = min(max(c + length * math.cos(heading), 0.0), W - 1.0)
            # pixels within width/2 of the segment (r, c) -> (r2, c2)
            dr, dc = r2 - r, c2 - c
            t = (((rows - r) * dr + (cols - c) * dc) / max(dr * dr + dc * dc, 1e-12)).clamp(0, 1)
            dist = torch.hypot(rows - r - t * dr, cols - c - t * dc)
            hole |= dist <= width / 2
            r, c = r2, c2
        return hole

    def draw(self, ids, seed):
        _, H, W = self.image_shape
        masks = []
        for i in ids:
            g = generator(seed, self.name, self.strokes, self.max_width, self.max_length, self.lo, self.hi, i)
            hole = torch.zeros(H, W, dtype=torch.bool)
            n = 1 + int(torch.randint(self.strokes, (1,), generator=g))
            drawn = 0
            for _ in range(100):
                if drawn >= n and hole.float().mean() >= self.lo:
                    break
                new = hole | self._stroke(g, H, W)
                if new.float().mean() <= self.hi:
                    hole, drawn = new, drawn + 1
            masks.append((~hole).float()[None])
        return {"mask": torch.stack(masks)}

    def describe(self):
        return {"strokes": self.strokes, "max_width": self.max_width, "max_length": self.max_length,
                "hole_target": [self.lo, self.hi]}
