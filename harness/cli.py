"""Command-line front door: unknown names and bad settings become one sentence and exit code 2.

Imports run one way: this module uses harness.validate (the checks, the config folder and its groups), never
the reverse. `CONF_DIR` and `GROUPS` are re-exported here for run.py, sweep.py and the tests."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf, open_dict

from core.files import REPO_ROOT  # noqa: F401 - re-exported (tests and scripts read the root from here)
from harness.validate import CONF_DIR, GROUPS, check_overrides, normalise_noise


def add_names(cfg: DictConfig, choices) -> DictConfig:
    """Record the chosen config names (solver=dps -> 'dps') for run names and rows."""
    with open_dict(cfg):
        cfg.names = {g: choices.get(g) for g in GROUPS if choices.get(g)}
    return cfg


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def fail_cells(failed: list):
    """After a sweep: name every refused or failed cell (run.record_failure's {"cell", "error", "code"}) and
    exit with the largest code (2: refused as bad input; 1: the cell failed); return if none failed."""
    if not failed:
        return
    print(f"error: {len(failed)} cell(s) of the sweep did not run:", file=sys.stderr)
    for f in failed:
        print(f"  {f['cell'] or '(defaults)'}: {f['error']}", file=sys.stderr)
    sys.exit(max(int(f.get("code", 1)) for f in failed))


def compose(overrides=()) -> DictConfig:
    """The config `run.py` would see for these overrides (for tests and scripts)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    check_overrides(list(overrides))
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    normalise_noise(cfg)  # only the chosen noise kind's parameters, as run_cell sees them
    return add_names(cfg, choices)
