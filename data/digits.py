"""The `digits` dataset: scikit-learn's 8×8 digits upsampled to 1×size×size in [-1, 1].

The splits are defined here and nowhere else: `split_indices()` is a fixed, seeded permutation of
the 1797 images; its first `HELD_OUT` (300) indices are never seen by `tools/train_digits.py` (which
imports this module), the rest are `train`. The held-out ids, sorted, are split once more: the
`VAL_SIZE` (100) largest are the `val` split, for tuning hyper-parameters (harness/tune.py), the other
200 are the `test` split the tables report. (The val ids were carved out of the end of the sorted
held-out list, so the first 200 test ids, and every table drawn from `dataset.start=0`, are unchanged.)
Ids are indices into `sklearn.datasets.load_digits()` (read by core/digits.py without importing scikit-learn),
so a row of results names one exact source image.
"""
from __future__ import annotations

import functools

import torch

from data.base import Dataset
from core.digits import load_digits
from core.errors import ConfigError
from core.rng import generator

HELD_OUT = 300    # never used to train the shipped models: val + test
VAL_SIZE = 100    # the largest held-out ids: the validation split hyper-parameters are tuned on
TEST_SIZE = HELD_OUT - VAL_SIZE
SPLIT_SEED = ("digits-split", 0)
SPLITS = ("train", "val", "test")


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    images, target = load_digits()  # scikit-learn's bundled file, read without importing scikit-learn
    return torch.tensor(images, dtype=torch.float32)[:, None], torch.tensor(target, dtype=torch.long)


def preprocess(images8: torch.Tensor, size: int = 16) -> torch.Tensor:
    """[N,1,8,8] counts in 0..16 -> [N,1,size,size] in [-1,1] (as models.gmm.fit_digits_mixture)."""
    x = images8 / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * 2 - 1


@functools.lru_cache(maxsize=1)
def split_indices() -> dict[str, list[int]]:
    """{'train': [...], 'val': [...], 'test': [...]}: sorted indices into load_digits(), disjoint, fixed forever."""
    n = _raw()[0].shape[0]
    perm = torch.randperm(n, generator=generator(*SPLIT_SEED)).tolist()
    held = sorted(perm[:HELD_OUT])
    return {"test": held[:TEST_SIZE], "val": held[TEST_SIZE:], "train": sorted(perm[HELD_OUT:])}


def digits_tensors(split: str, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [N,1,size,size] in [-1,1], labels [N]) of one split."""
    if split not in SPLITS:
        raise ConfigError(f"dataset.split={split!r} is not a digits split; use one of {', '.join(SPLITS)}.")
    images, labels = _raw()
    idx = torch.tensor(split_indices()[split])
    return preprocess(images[idx], size), labels[idx]


class DigitsDataset(Dataset):
    """Held-out digits at the prior's image size; `load` returns the class name as the caption."""

    name = "digits"

    def __init__(self, prior, n: int | None = 16, start: int = 0, split: str = "test", classes=None):
        if split not in SPLITS:
            raise ConfigError(f"dataset.split={split!r} is not a digits split; use one of {', '.join(SPLITS)}.")
        ids = split_indices()[split]
        self.classes = None if classes is None else sorted({int(c) for c in (classes if isinstance(classes, (list, tuple)) else [classes])})
        if self.classes is not None:  # e.g. the 3s of the split, for a 3 → 8 edit
            if not set(self.classes) <= set(range(10)):
                raise ConfigError(f"dataset.classes must be digits 0..9, got {classes}.")
            labels = _raw()[1]
            ids = [i for i in ids if int(labels[i]) in self.classes]
        if start < 0 or start >= len(ids) or (n is not None and n < 1):
            raise ConfigError(f"dataset.n must be >= 1 and 0 <= dataset.start < {len(ids)} for the digits "
                              f"{split} split (got n={n}, start={start}).")
        if n is not None and start + n > len(ids):  # never run fewer images than asked for, silently
            what = f"the {len(ids)} images of the digits {split} split" + (f" (classes {self.classes})" if self.classes else "")
            raise ConfigError(f"dataset.n={n} from dataset.start={start} asks for more than {what}; set dataset.n <= "
                              f"{len(ids) - start} (or dataset.n=null for all of them).")
        shape = tuple(prior.image_shape)
        if len(shape) != 3 or shape[0] != 1 or shape[1] != shape[2] or shape[1] < 8:
            raise ConfigError(f"dataset=digits gives 1×H×H grey images (H >= 8) but model {prior.name} takes "
                              f"{shape}; use a digits model (model=digits or model=gmm).")
        super().__init__(ids[start:] if n is None else ids[start:start + n])
        self.split, self.size = split, shape[1]
        self.start = start

    def load(self, image_id):
        images, labels = _raw()
        return preprocess(images[int(image_id)][None], self.size)[0], str(int(labels[int(image_id)]))

    def label(self, image_id) -> int:
        return int(_raw()[1][int(image_id)])

    def describe(self):
        out = {"dataset": self.name, "split": self.split, "dataset_start": self.start}
        if self.classes is not None:
            out["dataset_classes"] = ",".join(map(str, self.classes))
        return out
