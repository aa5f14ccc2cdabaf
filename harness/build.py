"""Compose one cell from a resolved config: validate everything before any compute."""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from tasks.errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Cell:
    prior: object
    task: object
    dataset: object
    solver: object
    device: torch.device
    dtype: torch.dtype


def instantiate(group: str, node: DictConfig, **extra):
    """Call node._target_ with its keys; unknown parameters become one clear sentence."""
    spec = OmegaConf.to_container(node, resolve=True)
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
    return fn(**spec, **extra)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("compute.device=cuda was asked for but no CUDA device is visible; use compute=cpu.")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"unknown compute.device {name!r}; use auto, cpu or cuda[:N].")
    return torch.device(name)


def check_run_options(cfg: DictConfig):
    if int(cfg.compute.batch_size) < 1:
        raise ConfigError(f"compute.batch_size must be at least 1, got {cfg.compute.batch_size}; set it to 1 or more.")
    if int(cfg.run.num_samples) < 1:
        raise ConfigError(f"run.num_samples must be at least 1, got {cfg.run.num_samples}.")
    if cfg.compute.dtype not in DTYPES:
        raise ConfigError(f"compute.dtype={cfg.compute.dtype} is not supported here; use one of {sorted(DTYPES)}.")


def build_cell(cfg: DictConfig) -> Cell:
    check_run_options(cfg)
    device = resolve_device(str(cfg.compute.device))
    solver = instantiate("solver", cfg.solver)
    prior = instantiate("model", cfg.model)
    task = instantiate("task", cfg.task, image_shape=prior.image_shape)
    dataset = instantiate("dataset", cfg.dataset, prior=prior)
    solver.check(prior, task)
    prior = prior.to(device)
    return Cell(prior, task, dataset, solver, device, DTYPES[cfg.compute.dtype])
