"""Run one cell: `python run.py solver=dps task=inpaint_box dataset=gmm model=gmm` (see conf/)."""
import json
import os
import sys

from harness.cli import CONF_DIR, add_names, fail, fail_cells
from core.errors import ConfigError

SHOWN = ("run", "n_ok", "n_diverged", "psnr", "ssim", "target_acc", "sw2", "sw2_floor", "mean_err", "mean_err_floor", "nfe", "vjp",
         "sec_per_sample")
# In a sweep (multirun) a cell that fails with any error is reported and the others run. Each failure is
# kept in FAILED ({"cell": overrides, "error": sentence, "code": 2 if refused as bad input else 1}) and,
# when this environment variable names a
# file, appended to it as one JSON line (so sweep.py can read failures of cells run in other processes).
FAILURES_ENV = "DIFFINV_FAILURES"
FAILED = []


def record_failure(overrides: list, error: BaseException):
    text = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
    entry = {"cell": " ".join(overrides), "error": (text.strip().splitlines() or [""])[0],
             "code": 2 if isinstance(error, ConfigError) else 1}
    FAILED.append(entry)
    print(f"error: cell {entry['cell']}: {entry['error']}", file=sys.stderr)
    if os.environ.get(FAILURES_ENV):
        with open(os.environ[FAILURES_ENV], "a") as f:
            f.write(json.dumps(entry) + "\n")


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
        except Exception as e:  # noqa: BLE001 - in a sweep one failing cell is reported, the others run
            if hc.mode == RunMode.MULTIRUN:
                record_failure(list(hc.overrides.task), e)
                return None
            if not isinstance(e, ConfigError):
                raise
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
