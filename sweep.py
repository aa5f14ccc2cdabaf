"""Grids of cells (Hydra multirun of run.py), locally, as parallel processes or as a SLURM array; reports.

    python sweep.py solver=dps,ddim task=inpaint_box,sr4 solver.steps=50,100    # one cell after another
    python sweep.py +experiment=grid_gmm --report=results/sweep_gmm              # a named grid, then its report
    python sweep.py solver=dps,ddrm,diffpir task=inpaint_box,sr4 --report DIR    # a command-line grid, then its report
    python sweep.py hydra/launcher=local_parallel ...                            # cells as parallel processes
    python sweep.py hydra/launcher=slurm hydra.launcher.partition=gpu ...        # a SLURM array (submitit)
    python sweep.py hydra/launcher=slurm ... run.shards=50                     # each cell as 50 shards: one array
    python sweep.py hydra/launcher=slurm ... run.sec_per_image=90              # shards sized to timeout_min
    python sweep.py --finish results/runs/RUN [...]                            # finish sharded cells explicitly
    python sweep.py --aggregate [--root results/runs] [--metrics psnr,ssim] [--report DIR] [--reference dps]

sweep.py's own flags (below) are read by argparse (`--report DIR` and `--report=DIR` alike); every other
argument is a Hydra override passed to `run.py --multirun`. Each cell resumes like `run.py` (finished
images are skipped), so rerunning a sweep finishes it.

Budgets across solvers: `solver.steps=20,100` with several solvers is passed on as `++solver.steps=20,100`
(so is every `solver.<key>=` override of a grid over several solvers): a solver whose config has no such key
(exact, pinv, ...) is then refused by its own one-sentence check ("has no parameter steps") and the other
cells run. A cell that cannot run (bad combination, missing SVD, ...) is reported in one sentence; the
sweep exits 1 when any cell failed, after the report of the cells that ran.
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time

from harness.cli import fail, fail_cells
from core.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sweep.py", allow_abbrev=False, description="Run a grid of cells (Hydra overrides) and/or report it.",
        epilog="Other arguments are Hydra overrides of run.py, e.g. solver=dps,ddrm task=inpaint_box,sr4 "
               "++solver.steps=20,100 +experiment=grid_gmm.")
    ap.add_argument("--aggregate", action="store_true", help="only report the finished runs under --root (no compute)")
    ap.add_argument("--root", help="runs folder (default: the grid's run.root, or results/runs)")
    ap.add_argument("--report", metavar="DIR", help="write table.md, table.tex, leaderboard.csv, plots, grids and "
                                                    "index.html into DIR")
    ap.add_argument("--metrics", default="psnr,ssim", help="comma-separated summary columns (default psnr,ssim)")
    ap.add_argument("--reference", help="solver (or row label) the paired per-image differences are taken to")
    ap.add_argument("--cost", default="nfe", choices=["nfe", "nfe_vjp", "sec"],
                    help="x axis of the quality-vs-cost plots: NFE, NFE + VJP, or seconds per reconstruction")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--leaderboard", help="--aggregate: also write the rebuilt leaderboard here "
                                          "(default: results/leaderboard.csv, or DIR/leaderboard.csv)")
    ap.add_argument("--out", help="--aggregate: also write the markdown tables to this file")
    ap.add_argument("--tune", action="store_true", help="tune each solver=/task= choice on the validation split "
                                                        "(harness/tune.py): conf/tuned/*.yaml, results/tuning/*.md")
    ap.add_argument("--trials", type=int, default=8, help="--tune: trials per (solver, task), equal for all (default 8)")
    ap.add_argument("--finish", nargs="+", metavar="RUN_DIR", help="finish these sharded cells (ROOT/RUN folders whose "
                                                                    "shards have all recorded their images): images.csv, "
                                                                    "summary, set metrics, grid, leaderboard row; no compute")
    ap.add_argument("--prune", action="store_true", help="--aggregate: drop leaderboard rows of runs not found under "
                                                         "--root (by default the leaderboard keeps every row it holds)")
    return ap


def load_runs(root: str):
    """Every finished run's summary row under `root`, each verified (the run folders are the source of truth)."""
    from harness.report import load_leaderboard

    return load_leaderboard(root)


def check_metrics(df, metrics: list[str], where: str):
    import pandas as pd

    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ConfigError(f"{', '.join(missing)} is not a summary column of the runs under {where}; --metrics takes "
                          f"numeric columns such as psnr,ssim,lpips_vgg,nfe.")
    text_cols = [m for m in metrics if not pd.api.types.is_numeric_dtype(df[m])]
    if text_cols:  # a protocol column such as run or solver is not a metric
        raise ConfigError(f"{', '.join(text_cols)} is not a numeric summary column; --metrics takes metrics such as "
                          f"psnr,ssim,lpips_vgg,nfe.")


def aggregate(root: str, leaderboard: str | None, metrics: list[str], report: str | None = None,
              reference: str | None = None, cost: str = "nfe", resamples: int = 2000, command: str = "",
              prune: bool = False) -> str:
    """The markdown tables (one per world) of the runs under `root`; with `report`, the whole report
    (table.md, table.tex, leaderboard.csv of these runs, plots, grids, index.html) in that folder. With
    `leaderboard`, that file is rebuilt as a view of the run folders: by union with the rows it holds
    (`records.rebuild_leaderboard`, under the upsert lock; `prune` drops rows of runs not found)."""
    from harness import report as rep
    from harness.records import rebuild_leaderboard

    df = load_runs(root)
    check_metrics(df, metrics, root)  # bad input is refused before anything is written
    if leaderboard:
        rebuild_leaderboard([root], leaderboard, prune=prune, summaries=df)  # the rows just read, not read twice
    if report:
        return rep.write_report(root, report, metrics, reference, cost, resamples, command, df=df)
    _, worlds = rep.build(root, metrics, reference, resamples, df=df)
    return rep.markdown(worlds, root)


def split_value(value: str) -> list[str]:
    """The choices of a sweep value `a,b,c` (not inside brackets or a function call)."""
    if any(ch in value for ch in "[]()"):
        return [value]
    return value.split(",")


def grid_overrides(args: list[str]) -> list[str]:
    """`solver.<key>=...` of a grid over several solvers becomes `++solver.<key>=...` (see the module doc)."""
    solvers = [len(split_value(a.partition("=")[2])) for a in args if a.partition("=")[0].lstrip("+") == "solver"]
    if not solvers or max(solvers) < 2:
        return args
    return [f"++{a}" if a.startswith("solver.") and "=" in a else a for a in args]


def grid_root(args: list[str]) -> str:
    """run.root of the grid's cells: the config composed with the first choice of every swept value."""
    return str(grid_config(args).run.root)


def grid_config(args: list[str]):
    """The config of the grid's first cell: the first choice of every swept value."""
    from harness.cli import compose

    first = []
    for a in args:
        if a.startswith(("hydra", "--")) or a.partition("=")[0].lstrip("+~").startswith("hydra"):
            continue
        key, eq, value = a.partition("=")
        first.append(f"{key}={split_value(value)[0]}" if eq else a)
    return compose(first)


def read_failures(path: str) -> list[dict]:
    """The cells that failed, one JSON line each ({"cell", "error", "code"}), appended by `run.record_failure`
    in whichever process ran the cell (in-process, local parallel or SLURM: the environment variable
    `run.FAILURES_ENV` carries the file's path)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


SLURM_TIMEOUT_MIN = 240  # conf/hydra/launcher/slurm.yaml's timeout_min, when the command line does not set it
BUDGET_MARGIN = 0.8      # of a task's time limit for its images (the rest: start-up, model load, finish)


def _take(args: list[str], key: str):
    """(value of `key=value` in args or None, args without it)."""
    hits = [a for a in args if a.partition("=")[0].lstrip("+") == key]
    return (hits[-1].partition("=")[2] if hits else None), [a for a in args if a not in hits]


def _number(value: str, key: str, kind=int):
    try:
        out = kind(value)
        if out <= 0:
            raise ValueError
        return out
    except ValueError:
        raise ConfigError(f"{key} must be a positive {'integer' if kind is int else 'number'}, got {value!r}.") from None


def shard_overrides(args: list[str]) -> list[str]:
    """`run.shards=N` becomes the sweep dimension `run.shard=0/N,...,N-1/N`, so every (cell, shard) pair is one
    job (one task of one SLURM array under hydra/launcher=slurm). `run.sec_per_image=S` (your estimate of a
    reconstruction's seconds, all its run.num_samples included) sizes N from the task time limit
    T = hydra.launcher.timeout_min (default 240) instead: N = ceil(dataset.n * S / (0.8 * 60 * T)), and
    refuses a compute.batch_size whose batch (the unit of resume) would not fit in one task."""
    shards, args = _take(args, "run.shards")
    sec, args = _take(args, "run.sec_per_image")
    if shards is None and sec is None:
        return args
    if shards is not None and sec is not None:
        raise ConfigError("give run.shards=N or run.sec_per_image=S (which sizes the shards), not both.")
    if sec is not None:
        sec = _number(sec, "run.sec_per_image", float)
        timeout = _number(_take(args, "hydra.launcher.timeout_min")[0] or str(SLURM_TIMEOUT_MIN),
                          "hydra.launcher.timeout_min")
        cfg = grid_config(args)
        if cfg.dataset.get("n") is None:
            raise ConfigError("run.sec_per_image sizes shards from dataset.n; set dataset.n (the cell's image count).")
        budget = BUDGET_MARGIN * 60 * timeout
        batch = int(cfg.compute.batch_size)
        if batch * sec > budget:
            raise ConfigError(f"a batch of compute.batch_size={batch} takes {batch * sec:.0f} s, beyond one task's "
                              f"{budget:.0f} s ({BUDGET_MARGIN:.0%} of timeout_min={timeout}), so a requeue would "
                              f"restart it; set compute.batch_size={max(1, int(budget // (4 * sec)))} or less.")
        shards = max(1, math.ceil(int(cfg.dataset.n) * sec / budget))
        print(f"run.sec_per_image={sec:g} x dataset.n={cfg.dataset.n} in tasks of {budget:.0f} s: "
              f"{shards} shard(s) per cell", file=sys.stderr)
    n = _number(str(shards), "run.shards")
    return [*args, "run.shard=" + ",".join(f"{k}/{n}" for k in range(n))]


def finish_cells(folders: list[str]) -> list[dict]:
    """`--finish`: finish each sharded cell from its folder's config.yaml (run.finish=true: no compute)."""
    from omegaconf import OmegaConf, open_dict

    from harness.runner import run_cell

    out = []
    for d in folders:
        d = os.path.normpath(d)
        if not os.path.isfile(os.path.join(d, "config.yaml")):
            raise ConfigError(f"{d} is not a run folder (no config.yaml); give ROOT/RUN folders of sharded cells.")
        cfg = OmegaConf.load(os.path.join(d, "config.yaml"))
        with open_dict(cfg):
            cfg.run.update(root=os.path.dirname(d) or ".", name=os.path.basename(d), finish=True, shard=None)
        out.append(run_cell(cfg))
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a, hydra_args = parser().parse_known_args(argv)
    unknown = [x for x in hydra_args if x.startswith("--") and x not in ("--multirun", "-m")]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]}; sweep.py takes {', '.join(o for o in parser()._option_string_actions if o.startswith('--'))}"
                          " and Hydra overrides (key=value).")
    metrics = [m for m in a.metrics.split(",") if m]
    command = "python sweep.py " + " ".join(argv)
    if a.aggregate:
        root = a.root or "results/runs"
        lb = a.leaderboard or (None if a.report else "results/leaderboard.csv")
        text = aggregate(root, lb, metrics, a.report, a.reference, a.cost, a.resamples, command, a.prune)
        if a.out:
            with open(a.out, "w") as f:
                f.write(f"`{command}`\n\n{text}")
        print(text)
        return 0
    if a.tune:  # one tuning protocol for every solver (harness/tune.py)
        from harness.tune import tune

        tune(hydra_args, a.trials, root=a.root or "results/runs/tune", command=command)
        return 0
    if a.finish:
        for summary in finish_cells(a.finish):
            print(f"finished {summary['run']}: {summary['n_images']} images")
        return 0
    args = shard_overrides(grid_overrides([x for x in hydra_args if x not in ("--multirun", "-m")]))
    from harness.validate import check_command_line

    check_command_line(args, multirun=True)  # every cell of the grid, before torch is imported
    root = a.root or (grid_root(args) if a.report else None)
    if a.root:
        args.append(f"run.root={a.root}")
    os.environ.setdefault("WANDB_RUN_GROUP", "sweep-" + time.strftime("%Y%m%d-%H%M%S"))  # logger=wandb: one group
    fd, record = tempfile.mkstemp(prefix="sweep_failures_", suffix=".jsonl")
    os.close(fd)
    import run

    os.environ[run.FAILURES_ENV] = record
    sys.argv[1:] = ["--multirun", *args]
    crashed = None
    try:
        run.main()
    except Exception as e:  # a cell raised (not a ConfigError): the others have run; report them, then fail
        crashed = e
    failed = read_failures(record)
    os.remove(record)
    if a.report:
        try:
            print(aggregate(root, None, metrics, a.report, a.reference, a.cost, a.resamples, command))
        except ConfigError as e:
            print(f"error: no report: {e}", file=sys.stderr)
    if crashed is not None:
        print(f"error: the sweep stopped: {type(crashed).__name__}: {crashed}", file=sys.stderr)
        failed.append({"cell": "(launcher)", "error": str(crashed), "code": 1})
    fail_cells(failed)  # each failed cell named once more, after the report; exit 2 if refused, 1 if it crashed
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        fail(str(e))
