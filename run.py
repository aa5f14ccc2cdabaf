"""Run one cell: `python run.py solver=dps task=inpaint_box dataset=gmm model=gmm` (see conf/)."""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.cli import add_names, check_overrides, fail
from harness.runner import run_cell
from tasks.errors import ConfigError


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig):
    try:
        summary = run_cell(add_names(cfg, HydraConfig.get().runtime.choices))
    except ConfigError as e:
        fail(str(e))
    shown = {k: summary[k] for k in ("run", "n_ok", "n_diverged", "psnr", "ssim", "sw2", "sw2_floor", "mean_err",
                                     "mean_err_floor", "nfe", "vjp", "sec_per_sample") if k in summary}
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return summary


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as e:
        fail(str(e))
    main()
