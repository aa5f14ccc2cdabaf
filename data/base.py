"""Datasets yield (id, image in [-1,1] of shape [C,H,W], caption or None), by explicit ids."""
from __future__ import annotations

import torch


class Dataset:
    name = "dataset"
    split = "test"

    def __init__(self, ids):
        self.ids = list(ids)

    def __len__(self):
        return len(self.ids)

    def load(self, image_id) -> tuple[torch.Tensor, str | None]:
        raise NotImplementedError

    def batch(self, ids) -> tuple[torch.Tensor, list]:
        items = [self.load(i) for i in ids]
        return torch.stack([im for im, _ in items]), [c for _, c in items]

    def describe(self) -> dict:
        return {"dataset": self.name, "split": self.split}
