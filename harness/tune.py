"""One tuning protocol for every solver: `python sweep.py --tune [--trials N] solver=S[,S2] task=T[,T2] ...`.

Each solver declares its tunable parameters at the end of conf/solver/<solver>.yaml:

    tune:                       # outside the cell identity (harness.runner.OUTSIDE); never passed to the solver
      scale: {low: 0.05, high: 2.0, log: true}      # a float range (log: sampled on a log scale)
      steps: {low: 10, high: 100, type: int}        # an integer range
      spacing: {choices: [adm, leading]}            # a categorical choice
      dsg.rate: {low: 0.01, high: 1.0, log: true}   # a nested parameter (dotted path into the solver config)
      scale: null                                   # drops an entry inherited through `defaults:`
      eta: {low: 0.0, high: 1.0, limits: [low, high]} # ends that are the parameter's own bounds (not flagged)

For every (solver, task) of the command line, Optuna's TPE sampler (seeded: the same command gives the same
trials) draws `--trials` values, the same budget for every solver, and the solver's defaults (the shipped values
under the same command line) are scored as one more candidate, so that tuning never picks values that score worse
on validation than the defaults (a draw equal to the defaults is not run twice); each trial is one cell run with
harness.runner.run_cell on the world's *validation* split (VALIDATION below: never the test split; a trial
whose score is NaN, a diverged run, counts as the worst value so that the sampler avoids its region), scored
by the world's objective (OBJECTIVE: sliced W2 to the exact posterior on gmm, PSNR elsewhere). A world is the
dataset, or dataset_latent for a latent prior on it (WORLDS: model=digits_latent on dataset=digits is
`digits_latent`, model=gmm_latent on dataset=gmm is `gmm_latent`); its validation split is the dataset's. The best
values are written as conf/tuned/<world>_<task>_<solver>.yaml (use it as `+tuned=<world>_<task>_<solver>`
after the same solver/task/world choices) and every trial as a markdown table in
results/tuning/<world>_<task>_<solver>.md.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import OmegaConf

from core.errors import ConfigError

# dataset config name -> the overrides that select its validation split (documented in conf/dataset/*.yaml)
VALIDATION = {
    "digits": ["dataset.split=val"],           # the 100 held-out ids after the 200 test ids (data/digits.py)
    "gmm": ["dataset.split=val"],              # draws seeded with the split: never a test draw (data/gmm.py)
    "ffhq": ["dataset.split=val", "dataset.id_range=[1000,1100]"],  # test is 00000 ... 00999
    "imagenet": ["dataset.split=val", "dataset.id_file=${oc.env:IMAGENET_VAL_IDS,???}"],
}
# (dataset, model) config names -> world name, where a dataset has more than one prior; else the dataset's name
WORLDS = {("digits", "digits_latent"): "digits_latent", ("gmm", "gmm_latent"): "gmm_latent"}
# world -> (summary column, direction)
OBJECTIVE = {"gmm": ("sw2", "minimize"), "gmm_latent": ("sw2", "minimize")}
DEFAULT_OBJECTIVE = ("psnr", "maximize")
TRIAL_ROOT = "results/runs/tune"   # git-ignored run folders of the trials


def space(solver_cfg) -> dict:
    """{name: spec} of a composed solver config's `tune` block; one sentence if it has none or a bad one."""
    block = solver_cfg.get("tune") if solver_cfg is not None else None
    target = str(solver_cfg.get("_target_", "?")).rsplit(".", 1)[-1]
    if not block:
        raise ConfigError(f"solver {target} declares no tunable parameters; add a `tune:` block at the end of its "
                          "conf/solver/*.yaml (e.g. tune: {scale: {low: 0.1, high: 2.0, log: true}}).")
    out = {}
    for name, spec in OmegaConf.to_container(block, resolve=True).items():
        if spec is None:  # `name: null` removes an entry inherited from the parent config (dps_dsg: no scale)
            continue
        if OmegaConf.select(solver_cfg, name, default=_MISSING) is _MISSING:
            raise ConfigError(f"solver {target}'s tune block names {name}, which is not one of its parameters.")
        if not isinstance(spec, dict) or not ("choices" in spec or {"low", "high"} <= set(spec)) or \
                not set(spec.get("limits") or ()) <= {"low", "high"}:
            raise ConfigError(f"tune.{name} of solver {target} must be {{low: a, high: b[, log: true][, type: int]"
                              "[, limits: [low, high]]} or {choices: [...]}.")
        out[name] = spec
    if not out:
        raise ConfigError(f"solver {target}'s tune block declares only null entries; give it one range.")
    return out


_MISSING = object()


def nest(flat: dict) -> dict:
    """{"dsg.rate": 0.3, "scale": 1} -> {"dsg": {"rate": 0.3}, "scale": 1} (the tuned config's solver node)."""
    out: dict = {}
    for key, v in flat.items():
        *head, last = key.split(".")
        node = out
        for h in head:
            node = node.setdefault(h, {})
        node[last] = v
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """The inverse of `nest`: dotted keys to leaves."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def suggest(trial, name: str, spec: dict):
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec["choices"]))
    if spec.get("type") == "int":
        return trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False)))
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def _choices(overrides: list[str], key: str) -> list[str]:
    vals = [o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+") == key]
    return vals[-1].split(",") if vals else []


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def validation_overrides(base: list[str]) -> tuple[str, list[str]]:
    """(world, overrides selecting its validation split); refuses a command line that picks another split."""
    from harness.cli import compose

    if any(o.partition("=")[0].lstrip("+") in ("dataset.split", "dataset.id_range", "dataset.id_file") for o in base):
        raise ConfigError("--tune picks the validation split itself; drop dataset.split / dataset.id_range / "
                          "dataset.id_file from the command line.")
    names = compose(base).names
    dataset = str(names.get("dataset"))
    if dataset not in VALIDATION:
        raise ConfigError(f"dataset {dataset} has no validation split for --tune; use one of {', '.join(VALIDATION)}.")
    return WORLDS.get((dataset, str(names.get("model"))), dataset), VALIDATION[dataset]


def tune_one(base: list[str], solver: str, task: str, trials: int, seed: int = 0, metric: str | None = None,
             conf_dir: str = "conf/tuned", table_dir: str = "results/tuning", root: str = TRIAL_ROOT,
             command: str = "") -> dict:
    """Tune one (solver, task) on the validation split; write its tuned config and trials table."""
    import optuna

    from harness.cli import compose
    from harness.runner import run_cell

    cell = [*base, f"solver={solver}", f"task={task}"]
    world, val = validation_overrides(cell)
    cfg = compose(cell)
    params = space(cfg.solver)
    column, direction = (metric, "maximize" if metric in ("psnr", "ssim") else "minimize") if metric else \
        OBJECTIVE.get(world, DEFAULT_OBJECTIVE)
    fixed = [*val, f"run.root={root}", f"run.leaderboard={root}/leaderboard.csv", "run.progress=false"]
    rows = []

    def scored(values: dict, summary: dict, **label) -> float:  # one row of the trials table; the score
        value = float(summary.get(column, float("nan")))
        rows.append({**values, column: value, **{k: summary.get(k) for k in ("nfe", "split", "n_images", "n_ok")},
                     **label})
        return value

    def objective(trial):
        values = {k: suggest(trial, k, spec) for k, spec in params.items()}
        value = scored(values, run_cell(compose([*cell, *fixed, *(f"solver.{k}={v}" for k, v in values.items())])))
        # a diverged trial (NaN/inf score) counts as the worst possible value: the sampler learns to avoid its
        # region (a failed trial would be ignored by TPE, which then keeps drawing there); the table shows nan
        return value if math.isfinite(value) else (math.inf if direction == "minimize" else -math.inf)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, trials // 2))
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.optimize(objective, n_trials=trials)
    # the defaults are one more candidate, outside the TPE history (so the trials are those of the budget alone)
    defaults = {k: OmegaConf.select(cfg.solver, k) for k in params}
    drawn = next((i for i, r in enumerate(rows) if all(r[k] == v for k, v in defaults.items())), None)
    if drawn is None:
        scored(defaults, run_cell(compose([*cell, *fixed])), trial="defaults")
    finite = [r for r in rows if math.isfinite(r[column])]
    if not finite:
        raise ConfigError(f"every --tune trial of {solver} on {task} diverged; narrow its tune ranges.")
    pick = (min if direction == "minimize" else max)(finite, key=lambda r: r[column])
    ref = rows[drawn] if drawn is not None else rows[-1]  # the defaults' row
    kept = ref[column] == pick[column]  # the defaults are (one of) the best: keep them
    chosen = ref if kept else pick
    best_params, best_value = {k: chosen[k] for k in params}, chosen[column]
    name = f"{world}_{task}_{solver}"
    n_img = rows[0]["n_images"]
    extra = [o for o in base if o.startswith(("solver.", "++solver."))]
    head = (f"tuned on validation, {trials} trials: {world} {val[0].split('=')[1]} split, {n_img} images, {column} "
            f"({direction}), Optuna TPE seed {seed}, the defaults scored too")
    import yaml

    lines = ["# @package _global_", f"# {solver} on {task}, world {world}: {head}.",
             f"# Use after the same choices: python run.py {' '.join(o for o in base if not o.startswith(('solver.', 'dataset.', 'metrics.')))} "
             f"solver={solver} task={task} +tuned={name}", f"# Tuning command: {command or '(python API)'}",
             f"# Chosen: {'the defaults' if kept else 'trial ' + str(rows.index(pick))} ({column} {best_value:.4g})"]
    # the command line's solver.* values (typed as YAML reads them), then the best trial's (floats to 6 digits)
    values = {o.partition("=")[0].split("solver.", 1)[1]: yaml.safe_load(o.partition("=")[2]) for o in extra}
    values = {k: v for k, v in values.items() if k not in best_params}
    values.update({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in best_params.items()})
    lines += yaml.safe_dump({"solver": nest(values)}, sort_keys=False, default_flow_style=False).splitlines()
    Path(conf_dir).mkdir(parents=True, exist_ok=True)
    (Path(conf_dir) / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    cols = [*params, column, "nfe", "split", "n_images", "n_ok"]
    table = [f"# Tuning {solver} on {task} ({world})", "", f"{head}. Command: `{command or '(python API)'}`", "",
             f"Ranges: {', '.join(f'{k} {v}' for k, v in params.items())}. "
             f"{'Kept: the defaults' if kept else 'Best trial'} "
             f"{', '.join(f'{k}={_fmt(v)}' for k, v in best_params.items())} ({column} {best_value:.4g}); "
             f"written to {conf_dir}/{name}.yaml.", "",
             "| trial | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for i, r in enumerate(rows):
        label = r.get("trial", f"{i} (= defaults)" if i == drawn else i)
        table.append(f"| {label}{' (chosen)' if r is chosen else ''} | " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    Path(table_dir).mkdir(parents=True, exist_ok=True)
    (Path(table_dir) / f"{name}.md").write_text("\n".join(table) + "\n")
    return {"name": name, "world": world, "solver": solver, "task": task, "trials": len(study.trials),
            "best": dict(best_params), "value": best_value, "metric": column, "rows": rows, "kept_defaults": kept}


def tune(overrides: list[str], trials: int, seed: int = 0, metric: str | None = None, conf_dir: str = "conf/tuned",
         table_dir: str = "results/tuning", root: str = TRIAL_ROOT, command: str = "") -> list[dict]:
    """Every (solver, task) of the command line (comma lists), the same `trials` budget each."""
    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}.")
    solvers, tasks = _choices(overrides, "solver"), _choices(overrides, "task")
    if not solvers or not tasks:
        raise ConfigError("--tune needs solver=<name>[,<name>...] and task=<name>[,<name>...] on the command line.")
    base = [o for o in overrides if o.partition("=")[0].lstrip("+") not in ("solver", "task")]
    return [tune_one(base, s, t, trials, seed, metric, conf_dir, table_dir, root, command)
            for t in tasks for s in solvers]


# -- the test tables: official defaults next to the tuned values ----------------------------------------
TEST_BASE = {  # the cells of benchmarks/gmm_solvers.py and benchmarks/digits_solvers.py (test split)
    "gmm": ["dataset=gmm", "model=gmm", "run.num_samples=16", "dataset.n=8", "metrics.n_ref=512"],
    "gmm_latent": ["dataset=gmm", "model=gmm_latent", "run.num_samples=16", "dataset.n=8", "metrics.n_ref=512"],
    "digits": ["dataset=digits", "model=digits", "dataset.n=8"],
    # benchmarks/digits_solvers.py --latent: unconditional, like the measurement-only baseline A⁺y
    "digits_latent": ["dataset=digits", "model=digits_latent", "dataset.n=8", "run.prompt=null"],
}
_GMM_COLS = ["sw2", "sw2_floor", "mean_err", "mean_err_floor", "psnr", "nfe"]
TEST_COLS = {"gmm": _GMM_COLS, "gmm_latent": _GMM_COLS, "digits": ["psnr", "ssim", "nfe", "sec_per_sample"],
             "digits_latent": ["psnr", "ssim", "nfe", "vjp", "decode_vjp", "sec_per_sample"]}
_HEADER = re.compile(r"# (\S+) on (\S+), world (\S+): tuned on validation, (\d+) trials: (.*)\.$")


def tuned_files(world: str, conf_dir: str = "conf/tuned") -> list[dict]:
    """The conf/tuned files of one world (read from each file's header, so `digits` never picks up
    `digits_latent_*`): solver, task, trials, budget line, tuning command and the flat solver values."""
    out = []
    for f in sorted(Path(conf_dir).glob(f"{world}_*.yaml")):
        lines = f.read_text().splitlines()
        m = _HEADER.match(lines[1]) if len(lines) > 1 else None
        if not m:
            raise ConfigError(f"{f} has no `# <solver> on <task>, world <world>: tuned on validation, N trials` "
                              "header; regenerate it with python sweep.py --tune.")
        if m.group(3) != world:
            continue
        command = next((ln.split(": ", 1)[1] for ln in lines if ln.startswith("# Tuning command: ")), "")
        out.append({"file": f, "solver": m.group(1), "task": m.group(2), "trials": int(m.group(4)),
                    "budget": m.group(5), "command": command,
                    "kept": any(ln.startswith("# Chosen: the defaults") for ln in lines),
                    "values": flatten(yaml_safe("\n".join(lines))["solver"])})
    return out


def at_edge(value, spec: dict, frac: float = 0.05) -> bool:
    """Whether a tuned numeric value lies within `frac` of its range's width from an end that is not one of the
    parameter's own bounds (`limits: [low, high]` in its spec: eta of DDRM lives in [0, 1], an optimum at 1 is not
    outside the range)."""
    if "choices" in spec or not isinstance(value, (int, float)):
        return False
    f = math.log if spec.get("log") else (lambda v: v)
    lo, hi, v = f(float(spec["low"])), f(float(spec["high"])), f(float(value))
    limits = set(spec.get("limits") or ())
    return any(end not in limits and d <= frac * (hi - lo) for end, d in (("low", v - lo), ("high", hi - v)))


def compare(world: str, out: str, conf_dir: str = "conf/tuned", table_dir: str = "results/tuning",
            root: str = "results/runs", leaderboard: str = "results/runs/tuned_leaderboard.csv",
            notes: list[str] | None = None) -> str:
    """Run every conf/tuned/<world>_*.yaml on the test split twice, at official defaults (the same fixed
    overrides, the tuned keys left at their defaults) and with the tuned values; write the markdown table.
    Rows where the tuned values score worse on test than the defaults are listed under the table."""
    from harness.cli import compose
    from harness.report import markdown_table
    from harness.runner import run_cell

    if world not in TEST_BASE:
        raise ConfigError(f"--compare knows the worlds {', '.join(sorted(TEST_BASE))}, not {world}.")
    base = [*TEST_BASE[world], f"run.root={root}", f"run.leaderboard={leaderboard}", "run.progress=false"]
    cols = TEST_COLS[world]
    files = tuned_files(world, conf_dir)
    if not files:
        raise ConfigError(f"no {conf_dir}/{world}_*.yaml; run python sweep.py --tune first.")
    column, direction = OBJECTIVE.get(world, DEFAULT_OBJECTIVE)
    by_task: dict[str, list] = {}
    worse, edges = [], []
    for f in files:
        solver, task, values = f["solver"], f["task"], f["values"]
        ranges = space(compose([f"solver={solver}"]).solver)
        tuned_keys = set(ranges)
        edges += [f"{solver} on {task}: {k}={_fmt(v)}" for k, v in values.items() if k in ranges and at_edge(v, ranges[k])]
        fixed = [f"solver.{k}={v}" for k, v in values.items() if k not in tuned_keys]
        best = [f"solver.{k}={v}" for k, v in values.items() if k in tuned_keys]
        scores = []
        tuned = f"tuned on validation, {f['trials']} trials" + (" (defaults kept)" if f["kept"] else "")
        for label, over in (("official defaults", fixed), (tuned, [*fixed, *best])):
            row = run_cell(compose([*base, f"task={task}", f"solver={solver}", *over]))
            scores.append(float(row.get(column, float("nan"))))
            by_task.setdefault(task, []).append([solver, label, " ".join(over) or "—",
                                                 *(_fmt(float(row.get(c, float("nan")))) for c in cols)])
            print(world, task, solver, label, [by_task[task][-1][3:]], flush=True)
        d, t = scores
        if (t > d) if direction == "minimize" else (t < d):
            worse.append(f"{solver} on {task} ({column} {_fmt(d)} at defaults, {_fmt(t)} tuned)")
    budgets = sorted({f"{f['trials']} trials, {f['budget']}" for f in files})
    commands = sorted({f["command"] for f in files})
    lines = [f"# Official defaults vs tuned on validation: the {world} world (test split)", "",
             f"Each row is `python run.py {' '.join(TEST_BASE[world])} task=<task> solver=<solver> <overrides>` on the "
             "test split. \"official defaults\": the solver's config as shipped (with the fixed budget overrides "
             "shown); \"tuned on validation, N trials\": the values of conf/tuned/<world>_<task>_<solver>.yaml, found by "
             f"`python sweep.py --tune` on the validation split (trials in {table_dir}/). Written by "
             f"`python -m harness.tune --compare {world} --out {out}`.", "",
             "Tuning budget (the same for every row): " + "; ".join(budgets) + ".", "",
             "Tuning commands:", "", *(f"- `{c}`" for c in commands), ""]
    for task, rows in by_task.items():
        lines += [f"## {task}", "", markdown_table(["solver", "setting", "overrides", *cols], rows)]
    lines += ["Tuned values worse than the official defaults on test (" + column + "): "
              + ("; ".join(worse) if worse else "none") + ".", ""]
    if edges:
        lines += ["Tuned values within 5 % of an end of their range (log scale where the range is; the optimum may lie "
                  "outside it): " + "; ".join(edges) + ".", ""]
    lines += [*(notes or [])]
    text = "\n".join(lines).rstrip("\n") + "\n"
    Path(out).write_text(text)
    return text


def yaml_safe(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m harness.tune", description="official defaults vs tuned values, test split")
    ap.add_argument("--compare", required=True, choices=sorted(TEST_BASE))
    ap.add_argument("--out", required=True)
    ap.add_argument("--note", action="append", default=[], help="a paragraph appended under the tables (repeatable)")
    a = ap.parse_args()
    try:
        compare(a.compare, a.out, notes=a.note)
    except ConfigError as e:  # one sentence, exit 2 (as harness.cli)
        import sys

        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
