"""Run one cell: `python run.py solver=dps task=inpaint_box dataset=gmm model=gmm` (see conf/)."""
import sys

from harness.cli import add_names, check_overrides, fail
from tasks.errors import ConfigError

SHOWN = ("run", "n_ok", "n_diverged", "psnr", "ssim", "sw2", "sw2_floor", "mean_err", "mean_err_floor", "nfe", "vjp",
         "sec_per_sample")


def main():
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from harness.runner import run_cell

    @hydra.main(config_path="conf", config_name="config", version_base=None)
    def cell(cfg):
        try:
            summary = run_cell(add_names(cfg, HydraConfig.get().runtime.choices))
        except ConfigError as e:
            fail(str(e))
        print("  ".join(f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
                        for k in SHOWN if k in summary))
        return summary

    cell()


if __name__ == "__main__":
    try:
        check_overrides(sys.argv[1:])  # before torch is even imported: unknown names fail at once
    except ConfigError as e:
        fail(str(e))
    main()
