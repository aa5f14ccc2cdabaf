"""Scoring of a cell: per-image metrics (PSNR/SSIM, LPIPS, edit accuracy, exact-posterior metrics), per-set
metrics (FID/KID), validated and loaded before any compute; and the condition a batch is solved under."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np  # (loaded by torch already)
import torch
from omegaconf import DictConfig

from harness.build import Cell
from harness.records import RunDir
from metrics import edit as editlib
from metrics import fid as fidlib
from metrics.image import psnr, ssim
from metrics.lpips import LPIPS
from metrics.posterior import posterior_metrics
from core.errors import ConfigError

if TYPE_CHECKING:  # pandas is imported by the finish step only, not at startup
    import pandas as pd

SET_METRICS = ("fid", "kid")


def condition(prior, prompts: list, n_samples: int):
    """The prior's condition for a batch (each prompt repeated for its samples; None if no image has one).
    A solver applies its own CFG scale to it (`Solver.condition`)."""
    if all(p is None for p in prompts):
        return None
    return prior.embed([p for p in prompts for _ in range(n_samples)])


class Scorer:
    """The metrics of a cell, validated (names, weight files) and loaded before any compute."""

    def __init__(self, cfg: DictConfig, cell: Cell):
        m = cfg.metrics
        self.weights = m.get("weights_dir")  # where metric weights are read (a path: not in the identity)
        self.lpips = (LPIPS(list(m.lpips), cell.device, bool(m.lpips_random_backbone), int(m.lpips_min_size),
                            folder=self.weights)
                      if m.get("lpips") else None)
        self.set = [str(k) for k in (m.get("set") or [])]
        unknown = sorted(set(self.set) - set(SET_METRICS))
        if unknown:
            raise ConfigError(f"unknown per-set metric {', '.join(unknown)}; metrics.set takes any of {list(SET_METRICS)}.")
        if self.set:
            self.features, self.mode = str(m.fid_features), str(m.fid_mode)
            fidlib.check_features(self.features, self.mode, self.weights)
            self.reference = str(m.fid_reference)
            self.reference_file = fidlib.reference_path(cfg.run.cache, self.reference)
            self.kid_args = (int(m.kid_subsets), int(m.kid_subset_size))
        self.device = cell.device
        self.edit = None
        if m.get("edit_classifier") and "edit" in cell.task.provides:  # target-class accuracy of edits
            self.edit = (editlib.load_classifier(m.edit_classifier), editlib.target_index(cell.task.target),
                         str(m.edit_classifier))

    def per_sample(self, x_hat: torch.Tensor, x: torch.Tensor) -> list[dict]:
        """Network metrics of every sample, batched: x_hat [B,N,C,H,W], x [B,C,H,W] -> per image {name: [N]}."""
        B, N = x_hat.shape[:2]
        flat = torch.nan_to_num(x_hat.flatten(0, 1))  # diverged images are marked by score_image
        vals = {}
        if self.lpips is not None:
            vals.update(self.lpips(flat, x.repeat_interleave(N, 0)))
        if self.edit is not None:
            vals.update(editlib.edit_scores(self.edit[0], flat.to(self.device), self.edit[1]))
        return [{k: v.reshape(B, N)[j].cpu() for k, v in vals.items()} for j in range(B)]

    def describe(self) -> dict:
        out = {}
        if self.lpips is not None:
            out["lpips_min_size"] = self.lpips.min_size
        if self.set:
            out.update(fid_mode=self.mode, fid_features=self.features, fid_reference=self.reference)
        if self.edit is not None:
            out["edit_classifier"] = self.edit[2]
        return out


def score_image(x_hat: torch.Tensor, x: torch.Tensor, posterior=None, image_id=None, n_ref=2048,
                per_sample: dict | None = None) -> dict:
    """Metrics of one image from its N reconstructions x_hat [N,C,H,W] and truth x [C,H,W]: the mean over
    samples, their std (`*_std_samples`), and best-of-N by PSNR (`psnr_best`; `*_bestpsnr` for the other
    metrics of that same sample). `per_sample` adds metrics computed elsewhere ({name: [N]}, e.g. LPIPS)."""
    if not torch.isfinite(x_hat).all():
        return {"status": "diverged"}
    p, s = psnr(x_hat, x.expand_as(x_hat)), ssim(x_hat, x.expand_as(x_hat))
    spread = lambda v: float(v.std()) if len(v) > 1 else 0.0  # noqa: E731 - over this image's N samples
    best = int(p.argmax())
    row = {"status": "ok", "psnr": float(p.mean()), "psnr_std_samples": spread(p), "psnr_best": float(p[best]),
           "best_sample": best, "ssim": float(s.mean()), "ssim_std_samples": spread(s), "ssim_bestpsnr": float(s[best])}
    for name, v in (per_sample or {}).items():
        v = v.float()
        row.update({name: float(v.mean()), f"{name}_std_samples": spread(v), f"{name}_bestpsnr": float(v[best])})
    if posterior is not None:
        row.update(posterior_metrics(x_hat, posterior, image_id, n_ref=n_ref))
    return row


def set_metrics(cfg, cell, rd: RunDir, df: pd.DataFrame, scorer: Scorer, dataset_key: dict) -> dict:
    """FID/KID of the first reconstruction of every finished, non-diverged image against the reference.
    `dataset_key`: the dataset as the cell's identity names it (no path), keying the truths' features."""
    recon = rd.reconstructions()
    ids = [i for i in cell.dataset.ids if str(i) in recon]
    ok = set(df.loc[df["status"] == "ok", "image_id"]) if len(df) else set()
    ids = [i for i in ids if str(i) in ok and torch.isfinite(recon[str(i)]).all()]
    extract = fidlib.load_features(scorer.features, scorer.mode, scorer.device, scorer.weights)
    if scorer.reference_file is None:  # this run's truths; their features are cached per (split, ids, extractor)
        named = {"dataset": cell.dataset.name, "split": cell.dataset.split, **dataset_key}  # name/split: the file's name
        key = {"dataset": named, "ids": [str(i) for i in ids], "features": scorer.features,
               "mode": scorer.mode, "shape": list(cell.task.image_shape)}
        path = fidlib.stats_path(cfg.run.cache, key)
        if not os.path.exists(path):
            x, _ = cell.dataset.batch(ids)
            fidlib.save_feats(path, fidlib.batched(extract, x))
        reference = f"truths:{os.path.basename(path)[:-4]}"
    else:
        path, reference = scorer.reference_file, scorer.reference
    with np.load(path) as ref:
        ref = {k: ref[k] for k in ref.files}
    feats = fidlib.batched(extract, torch.stack([recon[str(i)] for i in ids])) if ids else None
    out = fidlib.set_metrics(feats, ref, scorer.set, *scorer.kid_args) if ids else {k: math.nan for k in scorer.set}
    return {**out, "fid_n": len(ids), "fid_ref_n": int(len(ref["feats"])) if "feats" in ref else -1,
            "fid_reference": reference}
