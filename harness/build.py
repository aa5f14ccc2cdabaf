"""Compose one cell from a resolved config: validate everything before any compute."""
from __future__ import annotations

import inspect
import json
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from harness.validate import check_config
from solvers.base import at_key_path
from core.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
HALF = ("bfloat16", "float16")


@dataclass
class Cell:
    prior: object
    task: object
    dataset: object
    solver: object
    device: torch.device
    dtype: torch.dtype


def instantiate(group: str, node, **extra):
    """Call node._target_ with its keys; unknown parameters become one clear sentence. Nested nodes with
    a `_target_` (a solver made of solvers) are built first."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    solver = group.startswith("solver")
    for key, value in list(spec.items()):
        if solver and isinstance(value, dict) and "_target_" in value:
            spec[key] = instantiate(f"{group}.{key}", value)
    if solver:
        spec.pop("tune", None)  # the tunable ranges (harness/tune.py), not a parameter
    target = spec.pop("_target_", None)
    if target is None:
        raise ConfigError(f"conf/{group} entry has no _target_; every {group} config names the class it builds.")
    fn = get_object(target)
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(spec) - set(params))
        if unknown:
            known = sorted(k for k in params if k not in extra and k != "self")
            raise ConfigError(f"{group} {target.rsplit('.', 1)[-1]} has no parameter {', '.join(unknown)}; "
                              f"its parameters are: {', '.join(known)}.")
    try:
        return fn(**spec, **extra)
    except ConfigError as e:
        if "." not in group:
            raise
        raise at_key_path(e, group) from None  # a nested solver's messages name solver.restore.X, not solver.X


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("compute.device=cuda was asked for but no CUDA device is visible; use compute=cpu.")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown compute.device {name!r}; use auto, cpu or cuda[:N].")
    return torch.device(name)


def _accepts(node: DictConfig, name: str) -> bool:
    try:
        return name in inspect.signature(get_object(node._target_)).parameters
    except Exception:  # noqa: BLE001 - a bad _target_ is reported by instantiate, in its own words
        return False


def check_compute(cfg: DictConfig, device: torch.device) -> dict:
    """The prior's network dtype against device and model kind; returns the model's extra arguments."""
    dtype, model = str(cfg.compute.dtype), cfg.get("names", {}).get("model") or "this model"
    if dtype == "float16" and device.type == "cpu":
        raise ConfigError("compute.dtype=float16 needs a CUDA device (CPU half-precision convolutions are "
                          "unsupported or slow); use compute.dtype=bfloat16 or float32 on cpu.")
    networked = _accepts(cfg.model, "dtype")  # network priors take the dtype to run their network in
    supports64 = networked and bool(getattr(get_object(cfg.model._target_), "float64", False))
    if networked and dtype == "float64" and not supports64:
        raise ConfigError(f"model {model} runs its network in float32, bfloat16 or float16, float64 is for exact "
                          "priors; set compute.dtype=float32.")
    if not networked and dtype in HALF:
        raise ConfigError(f"model {model} has no network to run in {dtype}; set compute.dtype=float32 or float64.")
    return {"dtype": dtype} if networked and "dtype" not in cfg.model else {}


PRIOR_CACHE_SIZE = 2  # loaded priors a process keeps (a sweep of several cells of one model loads it once)
_PRIORS: "OrderedDict[str, object]" = OrderedDict()


def _fingerprint(value) -> list:
    """What a location in the model config holds, cheaply: each file's relative path, size and mtime."""
    path = os.path.expanduser(str(value))
    files = [path] if os.path.isfile(path) else sorted(
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs) if os.path.isdir(path) else []
    return [(os.path.relpath(f, path), os.path.getsize(f), os.stat(f).st_mtime_ns) for f in files]


def load_prior(cfg: DictConfig, device: torch.device, extra: dict):
    """The prior of `cfg.model` on `device`, from an LRU cache keyed by the model config, its extra arguments,
    the device and the compute switches that configure it, and the size/mtime of every weights file it
    names (a retrained checkpoint is loaded afresh). Priors hold no per-solve state (their cost counters are
    reset before every batch), so cells share them."""
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    switches = {k: bool(cfg.compute.get(k, False)) for k in ("compile", "channels_last")}
    key = json.dumps([spec, extra, str(device), switches,
                      {k: _fingerprint(v) for k, v in spec.items() if isinstance(v, str) and os.path.exists(
                          os.path.expanduser(v))}], sort_keys=True, default=str)
    if key in _PRIORS:
        _PRIORS.move_to_end(key)
        return _PRIORS[key]
    prior = instantiate("model", cfg.model, **extra).to(device)
    if hasattr(prior, "configure"):
        prior.configure(**switches)
    _PRIORS[key] = prior
    while len(_PRIORS) > PRIOR_CACHE_SIZE:
        _PRIORS.popitem(last=False)
    return prior


def build_cell(cfg: DictConfig) -> Cell:
    check_config(cfg)  # types, ranges, noise, compute, output paths (harness/validate.py)
    device = resolve_device(str(cfg.compute.device))
    model_extra = check_compute(cfg, device)
    solver = instantiate("solver", cfg.solver)
    prior = load_prior(cfg, device, model_extra)
    task = instantiate("task", cfg.task, image_shape=prior.image_shape)
    workers = {"num_workers": int(cfg.compute.num_workers)} if _accepts(cfg.dataset, "num_workers") else {}
    dataset = instantiate("dataset", cfg.dataset, prior=prior, **workers)
    solver.check(prior, task)
    if device.type == "cuda":  # TF32 matmuls/convolutions: faster on Ampere+, ~1e-3 relative error
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.compute.get("tf32", False))
    # solver state, measurements and guidance maths stay in float32 when only the network runs in half
    state = torch.float32 if cfg.compute.dtype in HALF else DTYPES[cfg.compute.dtype]
    return Cell(prior, task, dataset, solver, device, state)
