"""The `gmm` dataset: ground-truth images drawn from the exact prior itself, one seeded draw per id."""
from __future__ import annotations

from data.base import Dataset
from core.errors import ConfigError
from core.rng import generator


class GMMDataset(Dataset):
    name = "gmm"

    def __init__(self, prior, n: int = 8, start: int = 0, seed: int = 0, split: str = "test"):
        if not getattr(prior, "exact", False):
            raise ConfigError("dataset=gmm draws its images from the exact Gaussian-mixture prior; use model=gmm.")
        if split not in ("test", "val"):
            raise ConfigError(f"dataset.split={split!r} is not a gmm split; use test or val (tuning).")
        if n < 1 or start < 0:
            raise ConfigError(f"dataset.n must be >= 1 and dataset.start >= 0 (got {n}, {start}).")
        super().__init__(range(start, start + n))
        self.prior, self.seed, self.split = prior, int(seed), split

    def load(self, image_id):
        # The split is part of the seed, so 'test' and 'val' draws never coincide.
        return self.prior.sample_prior([generator("gmm-dataset", self.split, self.seed, image_id)])[0], None

    def describe(self):
        return {"dataset": self.name, "split": self.split, "dataset_seed": self.seed}
