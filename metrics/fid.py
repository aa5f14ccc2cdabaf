"""Per-set metrics: FID and KID between a run's reconstructions and a reference set.

Features come from clean-fid's Inception (modes `clean`, `legacy_pytorch`, `legacy_tensorflow`, with
clean-fid's own resizing) or from any callable mapping [-1,1] images to feature vectors
(`metrics.fid_features=module:function`, e.g. the digits classifier). The distances are computed
here from the features (Fréchet distance; unbiased polynomial-kernel MMD² for KID), agreeing with
clean-fid's `frechet_distance` / `kernel_distance` on the same features. Weights are never
downloaded: a missing file is a ConfigError before compute. They are read from `metrics.weights_dir`
(or $DIFFINV_WEIGHTS_DIR) when set, else from clean-fid's own location (/tmp) and torch hub's cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform

import numpy as np
import torch

from metrics import hub_checkpoints, import_callable, weights_dir
from core.errors import ConfigError
from core.files import atomic_savez
from core.rng import generator

MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
INCEPTION_TS = "inception-2015-12-05.pt"               # clean, legacy_tensorflow: clean-fid's torchscript
INCEPTION_PT = "pt_inception-2015-12-05-6726825d.pth"  # legacy_pytorch: pytorch-fid's weights (torch hub)


def inception_file(mode: str, folder: str | None = None) -> str:
    """The Inception weight file of a mode: in `weights_dir(folder)` when one is set, else where clean-fid reads it."""
    name = INCEPTION_PT if mode == "legacy_pytorch" else INCEPTION_TS
    folder = weights_dir(folder)
    if folder is not None:
        return os.path.join(folder, name)
    if mode == "legacy_pytorch":
        return os.path.join(torch.hub.get_dir(), "checkpoints", name)
    return os.path.join("./" if platform.system() == "Windows" else "/tmp", name)


def check_features(features: str, mode: str, folder: str | None = None):
    """Validate the feature extractor's name, mode and weights before compute."""
    if mode not in MODES:
        raise ConfigError(f"unknown metrics.fid_mode {mode!r}; choose one of {', '.join(MODES)}.")
    if features == "inception":
        path = inception_file(mode, folder)
        if not os.path.exists(path):
            raise ConfigError(f"FID/KID ({mode}) needs the Inception weights {os.path.basename(path)} in "
                              f"{os.path.dirname(path)}/ (offline: copy it there, or point metrics.weights_dir or "
                              f"$DIFFINV_WEIGHTS_DIR at the folder that holds it, or use metrics=default).")
    elif ":" not in features:
        raise ConfigError(f"metrics.fid_features must be 'inception' or 'module:function', not {features!r}.")


def load_features(features: str, mode: str = "clean", device="cpu", folder: str | None = None):
    """A function [-1,1] images [B,C,H,W] -> numpy features [B,D]."""
    check_features(features, mode, folder)
    if features == "inception":
        return InceptionFeatures(mode, device, folder)
    fn = import_callable(features, "metrics.fid_features")

    @torch.no_grad()
    def extract(x):
        return np.asarray(torch.as_tensor(fn(x.to(device))).detach().double().cpu().flatten(1))
    return extract


class InceptionFeatures:
    """clean-fid's pipeline for in-memory images: uint8, its mode's resizer, its Inception."""

    def __init__(self, mode: str, device="cpu", folder: str | None = None):
        from cleanfid.features import build_feature_extractor
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        self.mode, self.device = mode, torch.device(device)
        folder = weights_dir(folder)
        if folder is not None and mode != "legacy_pytorch":  # clean-fid's own builder reads /tmp only
            self.model = InceptionV3W(folder, download=False, resize_inside=mode == "legacy_tensorflow")
            self.model = self.model.to(self.device).eval()
        else:  # legacy_pytorch reads torch hub's checkpoints folder, pointed at `folder` when one is set
            with hub_checkpoints(folder):
                self.model = build_feature_extractor(mode, self.device, use_dataparallel=False)
        self.resize = build_resizer(mode)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        u8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # what a saved PNG holds
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        imgs = [self.resize(im.permute(1, 2, 0).numpy()) for im in u8]
        batch = torch.stack([torch.as_tensor(np.asarray(im)).permute(2, 0, 1) for im in imgs]).float()
        return self.model(batch.to(self.device)).detach().double().cpu().numpy()


def batched(extract, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([extract(x[s: s + batch_size]) for s in range(0, len(x), batch_size)])


def stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return feats.mean(0), np.cov(feats, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½ (symmetric form: no complex sqrtm)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    r = _psd_sqrt(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * cross)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(a,b) = (a·b/d + 1)³ (Bińkowski et al.)."""
    d, m, n = x.shape[1], len(x), len(y)
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean (and std) of unbiased MMD² over random subsets; on the full sets when both fit in one."""
    if min(len(x), len(y)) < 2:
        return float("nan"), float("nan")
    if max(len(x), len(y)) <= subset_size:
        return mmd2_unbiased(x, y), 0.0
    m, g, vals = min(len(x), len(y), subset_size), generator("kid", seed), []
    for _ in range(subsets):
        ix, iy = torch.randperm(len(x), generator=g)[:m].numpy(), torch.randperm(len(y), generator=g)[:m].numpy()
        vals.append(mmd2_unbiased(x[ix], y[iy]))
    return float(np.mean(vals)), float(np.std(vals))


def stats_path(cache_root: str, key: dict) -> str:
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = f"{key['dataset'].get('dataset', 'data')}_{key['dataset'].get('split', '')}_{h}"
    return os.path.join(cache_root, "fid_stats", f"{name}.npz")


def reference_path(cache_root: str, reference: str) -> str | None:
    """None for the run's own truths; else the file of named reference statistics (must exist)."""
    if reference == "truths":
        return None
    path = reference if reference.endswith(".npz") else os.path.join(cache_root, "fid_stats", f"{reference}.npz")
    if not os.path.exists(path):
        raise ConfigError(f"metrics.fid_reference={reference}: no statistics at {path}; use truths or name a file "
                          "written under results/cache/fid_stats/ by an earlier run.")
    return path


def save_feats(path: str, feats: np.ndarray):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mu, sigma = stats(feats)
    atomic_savez(path, feats=feats, mu=mu, sigma=sigma)


def fid_bootstrap_std(recon_feats: np.ndarray, mu2, sigma2, n_boot: int = 50, seed: int = 0) -> float:
    """Std of FID over bootstrap resamples of the reconstructions (the reference fixed). Uses the low-rank form
    tr(Σ2^½ Σ1 Σ2^½)^½ = Σ sqrt eig(A Aᵀ/(n−1)), A = (X − x̄) Σ2^½, an n×n problem, so it is cheap for any D."""
    n = len(recon_feats)
    if n < 3:
        return float("nan")
    r2 = _psd_sqrt(np.atleast_2d(sigma2).astype(np.float64))
    mu2 = np.atleast_1d(mu2).astype(np.float64)
    tr2 = float(np.trace(sigma2))
    g, vals = np.random.default_rng(seed), []
    for _ in range(n_boot):
        x = recon_feats[g.integers(0, n, n)].astype(np.float64)
        xc = x - x.mean(0)
        a = xc @ r2
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(a @ a.T / (n - 1)), 0, None)).sum()
        d = x.mean(0) - mu2
        vals.append(d @ d + (xc ** 2).sum() / (n - 1) + tr2 - 2 * cross)
    return float(np.std(vals))


def kid_jackknife_std(recon_feats: np.ndarray, ref_feats: np.ndarray) -> float:
    """Jackknife std (leave one reconstruction out) of the unbiased MMD²: the spread KID's subsets cannot give
    when one subset holds every image. (A bootstrap would duplicate rows, which biases MMD² upwards.)"""
    n = len(recon_feats)
    if n < 3 or len(ref_feats) < 2:
        return float("nan")
    vals = np.array([mmd2_unbiased(np.delete(recon_feats, i, 0), ref_feats) for i in range(n)])
    return float(np.sqrt((n - 1) / n * ((vals - vals.mean()) ** 2).sum()))


def set_metrics(recon_feats: np.ndarray, ref: dict, which, subsets=100, subset_size=1000, n_boot: int = 50) -> dict:
    """FID and/or KID of reconstructions' features against a reference {'feats'?, 'mu', 'sigma'}, with their
    spreads (`fid_std`: bootstrap over reconstructions; `kid_std`: over subsets; `kid_jack_std`: jackknife) and the
    feature dimension `fid_dim` (N below it makes the covariance singular: reports warn)."""
    out = {"fid_dim": int(recon_feats.shape[1])}
    if "fid" in which:
        mu, sigma = stats(recon_feats)
        out["fid"] = frechet_distance(mu, sigma, ref["mu"], ref["sigma"]) if len(recon_feats) > 1 else float("nan")
        out["fid_std"] = fid_bootstrap_std(recon_feats, ref["mu"], ref["sigma"], n_boot)
    if "kid" in which:
        if "feats" not in ref:
            raise ConfigError("KID needs reference features, not only statistics; use metrics.fid_reference=truths.")
        out["kid"], out["kid_std"] = kid(recon_feats, ref["feats"], subsets, subset_size)
        out["kid_jack_std"] = kid_jackknife_std(recon_feats, ref["feats"]) if len(recon_feats) <= 2048 else float("nan")
    return out
