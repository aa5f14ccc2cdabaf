"""Edit scores: how often an edited image is the target class, by a classifier given as module:function.

The function maps [N,C,H,W] images in [-1,1] to logits [N, K] over classes named "0".."K-1" (the digits
classifier: `models.digits_classifier:logits`). Fidelity to the source is the run's usual PSNR/SSIM/LPIPS
against the truth. Text targets would need a CLIP scorer, which is not shipped (no weights offline).
"""
from __future__ import annotations

import torch

from metrics import import_callable
from core.errors import ConfigError


def load_classifier(spec: str):
    """The logits function named by metrics.edit_classifier, imported before any compute."""
    return import_callable(spec, "metrics.edit_classifier", "models.digits_classifier:logits")


def target_index(target: str) -> int:
    if not str(target).isdigit():
        raise ConfigError(f"metrics.edit_classifier scores class targets named '0', '1', ...; task.target={target!r} is "
                          "not one (text edits need a CLIP scorer, not shipped); set metrics.edit_classifier=null.")
    return int(target)


@torch.no_grad()
def edit_scores(fn, x_hat: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """Per sample: target_acc (1 if the classifier's top class is the target), target_prob (its softmax)."""
    logits = torch.as_tensor(fn(x_hat)).float()
    if not 0 <= target < logits.shape[1]:
        raise ConfigError(f"task.target={target} is not one of the classifier's {logits.shape[1]} classes.")
    p = logits.softmax(1)
    return {"target_acc": (p.argmax(1) == target).float(), "target_prob": p[:, target]}
