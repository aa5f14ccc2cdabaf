"""Loggers beyond the CSV files (which are always written): Weights & Biases, optional.

`logger=wandb`: the resolved config, per-image rows as a table, the summary metrics and the grid
image, one W&B run per cell (named like the run folder). `WANDB_MODE=offline` (or logger.mode)
works with no network; online mode without an API key is refused before compute.
"""
from __future__ import annotations

import math
import netrc
import os

from omegaconf import DictConfig, OmegaConf

from tasks.errors import ConfigError

KINDS = ("csv", "wandb")


def wandb_mode(cfg: DictConfig) -> str:
    return str(cfg.logger.get("mode") or os.environ.get("WANDB_MODE") or "online").lower()


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_logger(cfg: DictConfig):
    """Before compute: a known logger kind, wandb importable, and a key when it runs online."""
    kind = str(cfg.logger.get("kind", "csv"))
    if kind not in KINDS:
        raise ConfigError(f"unknown logger kind {kind!r}; choose logger=csv or logger=wandb.")
    if kind != "wandb":
        return
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ConfigError("logger=wandb needs the wandb package; pip install wandb, or use logger=csv.") from e
    mode = wandb_mode(cfg)
    if mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.mode must be online, offline or disabled, not {mode!r}.")
    if mode == "online" and not _has_api_key():
        raise ConfigError("logger=wandb is online but no W&B API key was found; run `wandb login`, set "
                          "WANDB_API_KEY, or set WANDB_MODE=offline.")


def log_run(cfg: DictConfig, run_dir: str, name: str, rows, summary: dict):
    """Send one finished cell to W&B (no-op for logger=csv)."""
    if str(cfg.logger.get("kind", "csv")) != "wandb":
        return None
    import wandb

    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.get("entity"), name=name, id=name,
                     resume="allow", mode=wandb_mode(cfg), tags=list(cfg.logger.get("tags") or []),
                     config=OmegaConf.to_container(cfg, resolve=True), dir=os.environ.get("WANDB_DIR"),
                     reinit=True)
    try:
        run.log({"images": wandb.Table(dataframe=rows.astype({c: str for c in rows.columns
                                                             if rows[c].dtype == object}))})
        grid = os.path.join(run_dir, "grid.png")
        if os.path.exists(grid):
            run.log({"grid": wandb.Image(grid)})
        for k, v in summary.items():
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                run.summary[k] = v
            elif isinstance(v, str):
                run.summary[k] = v
        return run.dir
    finally:
        run.finish()
