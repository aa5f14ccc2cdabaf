"""Run one cell: `python run.py solver=dps task=inpaint_box dataset=gmm model=gmm` (see conf/)."""
import sys

from harness.cli import CONF_DIR, add_names, fail, fail_cells
from tasks.errors import ConfigError

SHOWN = ("run", "n_ok", "n_diverged", "psnr", "ssim", "target_acc", "sw2", "sw2_floor", "mean_err", "mean_err_floor", "nfe", "vjp",
         "sec_per_sample")
# The cells of a multirun that were refused: (the cell's overrides, the sentence, exit code). Filled by
# `cell` (in-process launchers); run.py --multirun and sweep.py exit non-zero when it is not empty.
FAILED: list[tuple[str, str, int]] = []


def main() -> list:
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
                FAILED.append((" ".join(hc.overrides.task), str(e), 2))
                print(f"error: cell {FAILED[-1][0]}: {e}", file=sys.stderr)
                return None
            fail(str(e))
        print("  ".join(f"{k}={summary[k]:.4g}" if isinstance(summary[k], float) else f"{k}={summary[k]}"
                        for k in SHOWN if k in summary))
        return summary

    cell()
    return FAILED


if __name__ == "__main__":
    from harness.validate import check_command_line

    try:
        check_command_line(sys.argv[1:])  # before torch is even imported: every cell of the command line
    except ConfigError as e:
        fail(str(e))
    fail_cells(main())
