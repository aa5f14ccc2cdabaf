"""A small CNN classifier of the 1×16×16 digits world (trained by `tools/train_digits.py classifier`).

Two uses: checking that the digits prior's samples are digits (mean max-softmax confidence, class
histogram), and `features(x)`, the 128-d penultimate activations, as the feature space of a
*domain* FID/KID for the digits world. That domain metric is only comparable with itself: never
report it as FID, never put it in a column next to (or average it with) Inception-feature FID.

`standardised_features(x)` (the one to use for FID/KID: `metrics.fid_features=models.digits_classifier:
standardised_features`) standardises each of the 128 dimensions with the mean and std of the features
of the `train` split (1497 images, the classifier's own training set; fixed, so every run and every
reference share one feature space). On the raw ReLU activations the polynomial kernel (a·b/d + 1)³ of KID
is dominated by a few large dimensions (KID of order −10⁴ on 16 images); standardised, every dimension
weighs alike and KID lands on the usual scale (×10³ of order 1–100).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core.errors import ConfigError

WEIGHTS = Path(__file__).resolve().parent / "weights" / "digits_classifier" / "model.safetensors"
FEATURE_DIM = 128


class DigitsClassifier(nn.Module):
    """conv-conv-pool ×2 (16→8→4), then 1024 → 128 (features) → 10 logits. Input in [-1, 1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, 10)

    def _check(self, x):
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 16, 16):
            raise ConfigError(f"the digits classifier takes [N,1,16,16] images in [-1,1], got {tuple(x.shape)}; "
                              f"use it only on the 16-px digits world.")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, 128]: a domain feature space (digits FID/KID), not Inception's."""
        self._check(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_classifier(path: str | Path | None = None, device="cpu") -> DigitsClassifier:
    """The shipped classifier in eval mode (no gradients needed for metrics)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else WEIGHTS
    if not path.is_file():
        raise ConfigError(f"digits classifier weights not found at {path}; run "
                          f"`python -m tools.train_digits classifier` to create them.")
    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)


_LOADED: dict = {}


def _cached(device) -> DigitsClassifier:
    """One loaded classifier per device (scoring calls this once per batch)."""
    key = str(device)
    if key not in _LOADED:
        _LOADED[key] = load_classifier(device=device)
    return _LOADED[key]


@torch.no_grad()
def features(x: torch.Tensor, model: DigitsClassifier | None = None) -> torch.Tensor:
    """Domain features of [N,1,16,16] images in [-1,1] with the shipped classifier (see module docstring)."""
    model = model or _cached(x.device)
    return model.features(x.float().clamp(-1, 1))


_TRAIN_STATS: dict = {}


@torch.no_grad()
def train_feature_stats(device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [128], std [128]) of the shipped classifier's features on the digits train split (dead units: std 1)."""
    key = str(device)
    if key not in _TRAIN_STATS:
        from data.digits import digits_tensors

        x, _ = digits_tensors("train")
        f = features(x.to(device))
        sd = f.std(0)
        _TRAIN_STATS[key] = (f.mean(0), torch.where(sd > 1e-8, sd, torch.ones_like(sd)))
    return _TRAIN_STATS[key]


@torch.no_grad()
def standardised_features(x: torch.Tensor) -> torch.Tensor:
    """`features(x)` standardised per dimension with the train split's statistics (see module docstring)."""
    mu, sd = train_feature_stats(x.device)
    return (features(x) - mu) / sd


@torch.no_grad()
def logits(x: torch.Tensor, model: DigitsClassifier | None = None) -> torch.Tensor:
    """Class logits [N, 10] of [N,1,16,16] images in [-1,1] (classes "0".."9"; the edit task's scorer)."""
    model = model or _cached(x.device)
    return model(x.float().clamp(-1, 1))


@torch.no_grad()
def confidence(x: torch.Tensor, model: DigitsClassifier | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max softmax probability [N], predicted class [N]) of [N,1,16,16] images."""
    model = model or _cached(x.device)
    p = model(x.float().clamp(-1, 1)).softmax(1)
    conf, cls = p.max(1)
    return conf, cls
