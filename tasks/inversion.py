"""The inversion task: y = x exactly (identity operator, no noise). A 'solver' inverts the image to
noise and regenerates it; PSNR against the truth is the round-trip fidelity."""
from __future__ import annotations

from tasks.base import LinearTask


class Inversion(LinearTask):
    name = "inversion"

    def __init__(self, image_shape, noise=None):
        super().__init__(image_shape, noise)

    @property
    def provides(self) -> frozenset:
        return super().provides | {"identity"}  # y is the image: what round-trip and edit solvers start from

    def A(self, x):
        return x

    def At(self, y):
        return y

    def pinv(self, y):
        return y

    def describe(self):
        return {"operator": "identity"}
