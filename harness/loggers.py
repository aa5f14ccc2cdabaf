"""Loggers beyond the CSV files (which are always written): Weights & Biases, optional.

`logger=wandb`: one W&B run per cell (named like the run folder), in a group per sweep (sweep.py sets
WANDB_RUN_GROUP; logger.group overrides it). The runner calls `start_run` before its loop and
`log_batch` after each recorded batch: that batch's rows (a table), the running means of the numeric
metrics over the images so far, and the first batch's reconstructions (a few images). At the end
`log_run` logs every row, the grid and the summary and finishes the run. A cell that raised is never
left looking alive: the next `start_run` (the next cell of a sweep) or the process's exit finishes it
with exit code 1 and summary `status=crashed`, so W&B shows it as crashed/failed.
`WANDB_MODE=offline` (or logger.mode) works with no network; online mode without an API key is
refused before compute.
"""
from __future__ import annotations

import atexit
import math
import netrc
import os

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError

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


N_IMAGES = 4  # reconstructions logged from the first batch


class _Live:
    """The open W&B run of the cell being computed (at most one per process)."""
    run = None
    rows: list = []
    logged_images = False


def _crash_open_run():
    """Finish a run that was started but never reached log_run: its cell raised."""
    if _Live.run is not None:
        run, _Live.run = _Live.run, None
        try:
            run.summary["status"] = "crashed"
            run.finish(exit_code=1)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_crash_open_run)


def _numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and not (isinstance(v, float) and math.isnan(v))}


def start_run(cfg: DictConfig, name: str):
    """Open the cell's W&B run before its loop (no-op for logger=csv)."""
    if str(cfg.logger.get("kind", "csv")) != "wandb":
        return None
    import wandb

    _crash_open_run()
    _Live.run = wandb.init(project=cfg.logger.project, entity=cfg.logger.get("entity"), name=name, id=name,
                           resume="allow", mode=wandb_mode(cfg), tags=list(cfg.logger.get("tags") or []),
                           group=cfg.logger.get("group") or os.environ.get("WANDB_RUN_GROUP"),
                           config=OmegaConf.to_container(cfg, resolve=True), dir=os.environ.get("WANDB_DIR"),
                           reinit=True)
    _Live.rows, _Live.logged_images = [], False
    return _Live.run


def log_batch(rows: list[dict], x_hat=None):
    """After a recorded batch: its rows, the running means so far, and (first batch) a few reconstructions."""
    run = _Live.run
    if run is None:
        return
    import pandas as pd
    import wandb

    _Live.rows += rows
    ok = [r for r in _Live.rows if r.get("status") == "ok"]
    df = pd.DataFrame([_numbers(r) for r in ok])
    log = {f"running/{k}": float(v) for k, v in df.mean().items()} if len(df) else {}
    log["images_done"] = len(_Live.rows)
    batch = pd.DataFrame(rows)
    log["batch_rows"] = wandb.Table(dataframe=batch.astype({c: str for c in batch.columns if batch[c].dtype == object}))
    if x_hat is not None and not _Live.logged_images:
        from metrics.image import to01

        log["reconstructions"] = [wandb.Image(to01(x[0] if x.dim() == 4 else x).permute(1, 2, 0).numpy(),
                                              caption=str(r["image_id"])) for x, r in zip(x_hat[:N_IMAGES], rows)]
        _Live.logged_images = True
    run.log(log)


def log_run(cfg: DictConfig, run_dir: str, name: str, rows, summary: dict):
    """Send one finished cell to W&B and finish its run (no-op for logger=csv)."""
    if str(cfg.logger.get("kind", "csv")) != "wandb":
        return None
    run = _Live.run if _Live.run is not None else start_run(cfg, name)
    _Live.run = None
    import wandb

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
        run.summary["status"] = "finished"
        return run.dir
    finally:
        run.finish()
