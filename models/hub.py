"""Finding diffusers weights: a local directory or a hub id, offline-first, failing in one sentence.

The benchmark never downloads weights behind the user's back when `HF_HUB_OFFLINE=1`: a hub id
that is not in the local cache becomes a ConfigError naming the id and the fix (download it on a
machine with network, pass the directory as `model.path=`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from core.errors import ConfigError

NET_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def net_dtype(name: str, model: str) -> torch.dtype:
    if name not in NET_DTYPES:
        raise ConfigError(f"{model} cannot run its network in dtype={name!r}; use one of {sorted(NET_DTYPES)} "
                          "(compute.dtype).")
    return NET_DTYPES[name]


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def looks_local(path: str) -> bool:
    """A hub id is `owner/name`; anything absolute, relative-dotted, home-based or deeper is a path."""
    return (path.startswith(("/", ".", "~")) or os.sep + os.sep in path or path.count("/") != 1
            or os.path.exists(path))


def resolve(path: str, model: str, patterns=("*.json", "*.safetensors", "*.bin", "*.txt")) -> Path:
    """The local directory holding `path`'s files: itself, or the hub cache's snapshot of it."""
    if not path or path == "???":
        raise ConfigError(f"{model} needs a weights location; set model.path=<hub id or local directory>.")
    if looks_local(path):
        p = Path(path).expanduser()
        if not p.is_dir():
            raise ConfigError(f"{model} weights directory {str(p)!r} does not exist; fix model.path= "
                              "(a diffusers directory or a hub id).")
        return p
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: whatever the hub library raises, the fix is the same
        pass
    hint = (f"download it on a machine with network (for example `huggingface-cli download {path} --local-dir DIR`) "
            "and pass the local directory via model.path=DIR")
    if offline():
        raise ConfigError(f"{model} weights {path!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
                          f"{hint}.")
    try:
        return Path(snapshot_download(path, allow_patterns=list(patterns), etag_timeout=10))
    except Exception as e:  # noqa: BLE001 - network errors, missing repos, gated repos: one sentence
        raise ConfigError(f"{model} could not fetch {path!r} from the hub ({type(e).__name__}); {hint}.") from None


def need_file(p: Path, model: str, what: str):
    if not p.exists():
        raise ConfigError(f"{model} directory is missing {what} ({str(p)!r}); point model.path= at a diffusers "
                          "pipeline directory (model_index.json, unet/, scheduler/).")
    return p


def schedule_from(config_file: Path, model: str) -> tuple[torch.Tensor, str]:
    """ᾱ (float64) and prediction type from a diffusers scheduler config."""
    from diffusers import DDPMScheduler

    cfg = json.loads(config_file.read_text())
    pred = cfg.get("prediction_type", "epsilon")
    if pred not in ("epsilon", "v_prediction"):
        raise ConfigError(f"{model} scheduler predicts {pred!r}; only epsilon and v_prediction networks are "
                          "supported as priors here, choose another checkpoint.")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    kw = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    sched = DDPMScheduler.from_config(kw)  # diffusers' schedule definitions, and its validation
    T, b0, b1 = sched.config.num_train_timesteps, sched.config.beta_start, sched.config.beta_end
    kind = sched.config.beta_schedule if sched.config.trained_betas is None else "trained"
    # the two common schedules are recomputed in float64 (diffusers builds betas in float32)
    if kind == "linear":
        betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    elif kind == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    else:
        betas = sched.betas.to(torch.float64)
    return torch.cumprod(1 - betas, dim=0), ("v" if pred == "v_prediction" else "epsilon")


def fingerprint(root: Path, big: int = 256 << 20) -> str:
    """sha256 (12 hex) of the weight files under `root`, so rows say which weights produced them, not
    only where they were. Files over `big` bytes contribute their size and first and last 8 MiB."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(p for p in Path(root).rglob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth")):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root)}:{size}".encode())
        with open(f, "rb") as fh:
            if size <= big:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(fh.read(8 << 20))
                fh.seek(size - (8 << 20))
                h.update(fh.read())
    return h.hexdigest()[:12]

