"""Run one cell: `python run.py solver=dps task=inpaint_box dataset=gmm model=gmm` (see conf/)."""
import sys

from harness.cli import CONF_DIR, add_names, check_overrides, fail
from tasks.errors import ConfigError

SHOWN = ("run", "n_ok", "n_diverged", "psnr", "ssim", "target_acc", "sw2", "sw2_floor", "mean_err", "mean_err_floor", "nfe", "vjp",
         "sec_per_sample")


def main():
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from harness.runner import run_cell

    @hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
    def cell(cfg):
        hc = HydraConfig.get()
        try:
            summary = run_cell(add_names(cfg, hc.runtime.choices))
        except ConfigError as e:
            if hc.mode == RunMode.MULTIRUN:  # one bad cell of a sweep is reported, the others run
                print(f"error: cell {' '.join(hc.overrides.task)}: {e}", file=sys.stderr)
                return None
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
