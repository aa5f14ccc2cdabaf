"""Every user-facing option checked before anything is written or computed: one sentence, exit 2.

Three layers, all before a run folder, a cache file or a solver step exists:

- `check_command_line(argv, multirun)` (run.py / sweep.py, before torch is imported): Hydra's override
  syntax, config names, unknown keys (with the closest valid key), each value against the type of its
  key's default in the composed config (an int default takes an integer, a float default a number, a bool
  default true/false: a new solver option is checked for free), then `check_config` on every cell of the
  grid (sweep values and an experiment's `hydra.sweeper.params` expanded).
- `check_config(cfg)` (top of `harness.runner.run_cell`, for any caller): declared types and ranges of the
  common keys, every solver's `steps` / `*_steps`, the measurement noise of the chosen kind, compute
  settings, and that run.root, run.cache and run.leaderboard can be written.
- `check_cell(cfg, cell)` (run_cell, after the cell is built, before its run folder): what needs the
  built objects: a fixed prompt on a prior that takes none, each solver's step count against the prior's
  schedule. Dataset sizes and image decoding are checked by the datasets' constructors (data/).
"""
from __future__ import annotations

import difflib
import fnmatch
import itertools
import os
import tempfile

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from core.errors import ConfigError
from core.files import REPO_ROOT
from tasks.noise import NOISE_PARAMS

CONF_DIR = os.path.join(REPO_ROOT, "conf")
# ${repo:models/weights/x} in a config: a path inside the repository, whatever the cwd.
if not OmegaConf.has_resolver("repo"):
    OmegaConf.register_new_resolver("repo", lambda rel="": os.path.join(REPO_ROOT, str(rel)))
GROUPS = ("solver", "task", "dataset", "model", "compute", "experiment", "metrics", "logger")

DTYPE_NAMES = ("float32", "float64", "bfloat16", "float16")
SWITCHES = ("compile", "channels_last", "tf32")

# Declared (type, minimum, nullable) of the keys every cell has; a solver's keys by their last name
# (nested solvers included). Types of every other key follow their default (see check_types).
DECLARED = {
    "seed": (int, None, False),
    "run.num_samples": (int, 1, False),
    "run.grid_images": (int, 0, False),
    "run.progress": (bool, None, False),
    "compute.batch_size": (int, 1, False),
    "compute.num_workers": (int, 0, False),
    "dataset.n": (int, 1, True),
    "dataset.start": (int, 0, False),
    "metrics.n_ref": (int, 1, False),
    "metrics.lpips_min_size": (int, 1, False),
    "metrics.kid_subsets": (int, 1, False),
    "metrics.kid_subset_size": (int, 2, False),
    **{f"compute.{k}": (bool, None, False) for k in SWITCHES},
}
SOLVER_DECLARED = {"steps": (int, 1, False), "annealing_steps": (int, 1, False), "ode_steps": (int, 1, False),
                   "*_steps": (int, 0, False)}
TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false"}


_MISSING = object()


def options(group: str) -> list[str]:
    """The config names of a group (conf/<group>/*.yaml)."""
    folder = os.path.join(CONF_DIR, group)
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if os.path.isdir(folder) else []


def check_overrides(argv: list[str]):
    """Refuse `group=name` overrides that name no config file, before Hydra or any compute starts."""
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+~")
        if not eq or key not in GROUPS or "(" in value:
            continue
        for name in value.split(","):
            if name not in options(key):
                raise ConfigError(f"unknown {key} {name!r}; choose one of: {', '.join(options(key))} (conf/{key}/).")


def _kind(value):
    """The declared type a value has (bool is not an int, an int is a number)."""
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    return type(value)


def _fits(want, value) -> bool:
    got = _kind(value)
    return got is want or (want is float and got is int)


def check_value(key: str, value, want, minimum=None, nullable=True, hint=""):
    if value is None:
        if nullable:
            return
        raise ConfigError(f"{key} must be {TYPE_WORDS[want]}, got null{hint}.")
    if not _fits(want, value):
        raise ConfigError(f"{key} must be {TYPE_WORDS[want]}, got {value!r}{hint}.")
    if minimum is not None and value < minimum:
        bound = ">= 0" if minimum == 0 else f"at least {minimum}"
        raise ConfigError(f"{key} must be {bound}, got {value}; set {key}={minimum} or more.")


def declared(key: str, value):
    """`value` checked against the declared type and range of `key` (DECLARED), returned: the one check of a
    declared key wherever it is read (check_config, and the runner's identity for `seed`)."""
    want, minimum, nullable = DECLARED[key]
    check_value(key, value, want, minimum, nullable)
    return value


# -- the composed config ---------------------------------------------------------------------------
def _solver_nodes(node, path="solver"):
    """(path, node) of the solver and of every solver inside it (a `_target_` node)."""
    if isinstance(node, DictConfig):
        yield path, node
        for k, v in node.items_ex(resolve=False):
            if isinstance(v, DictConfig) and "_target_" in v:
                yield from _solver_nodes(v, f"{path}.{k}")


def _noise_nodes(node, path):
    """(path, node) of every measurement-noise mapping under a task (`noise`, `degradation.noise`, ...)."""
    if not isinstance(node, DictConfig):
        return
    for k, v in node.items_ex(resolve=False):
        if isinstance(v, DictConfig):
            if k == "noise":
                yield f"{path}.{k}", v
            else:
                yield from _noise_nodes(v, f"{path}.{k}")


def normalise_noise(cfg: DictConfig, given: set = frozenset()):
    """Each noise mapping keeps the parameters of its `kind` only, so `task.noise.kind=poisson` alone selects
    Poisson noise (the gaussian `sigma`/`space` defaults are dropped, and never enter the cell's identity).
    A parameter the user set (`given`) that its kind does not take, or that no kind takes, is refused."""
    for path, node in list(_noise_nodes(cfg.task, "task")):
        kind = node.get("kind", "gaussian")
        if kind not in NOISE_PARAMS:
            raise ConfigError(f"unknown noise kind {kind!r}; set {path}.kind to one of {sorted(NOISE_PARAMS)}.")
        every = set().union(*NOISE_PARAMS.values())
        for key in list(node.keys()):
            if key == "kind" or key in NOISE_PARAMS[kind]:
                continue
            takes = ", ".join(NOISE_PARAMS[kind]) or "no parameters"
            if key not in every or f"{path}.{key}" in given:
                raise ConfigError(f"{path}.{key} is not a parameter of {kind} noise (it takes {takes}); "
                                  f"drop it or choose another {path}.kind.")
            with open_dict(node):
                del node[key]


def _writable(key: str, path, is_file: bool):
    """The path can be created and written: it is (or will be) a folder / a file, under a writable folder."""
    if path is None or str(path).strip() in ("", "???"):
        raise ConfigError(f"{key} is empty; set {key} to a {'file' if is_file else 'folder'} path.")
    p = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.exists(p):
        if is_file and os.path.isdir(p):
            raise ConfigError(f"{key}={path} is a folder; set {key} to a CSV file path.")
        if not is_file and not os.path.isdir(p):
            raise ConfigError(f"{key}={path} is a file, not a folder; set {key} to a folder path.")
    parent = os.path.dirname(p) if is_file else p
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{key}={path} lies under the file {parent}, so it cannot be created; choose another path.")
    try:  # an unnamed file (O_TMPFILE where the filesystem has it): proves writability, leaves nothing behind
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={path} cannot be written ({parent}: {e.strerror or e.__class__.__name__}); "
                          f"choose a writable location.") from None
    if is_file and os.path.exists(p) and not os.access(p, os.W_OK):
        raise ConfigError(f"{key}={path} is not writable; choose a writable file.")


LOCAL_PATHS = {"model.path": ("needs a weights location", "hub id or local directory"),
               "dataset.root": ("needs the image folder", "folder of test images")}


def check_paths(cfg: DictConfig):
    """Whole-experiment presets leave the machine's paths open: name every one still missing, in one sentence."""
    missing = []
    for key in LOCAL_PATHS:
        group, leaf = key.split(".")
        node = cfg.get(group)
        if node is None or leaf not in list(node.keys()):
            continue
        try:
            value = node[leaf]
        except Exception:  # noqa: BLE001 - a missing value (???) or an unset ${oc.env:VAR,???}
            value = "???"
        if value == "???":
            missing.append(key)
    if missing:
        def label(key):
            group = key.split(".")[0]
            return f"{group} {cfg.get('names', {}).get(group) or cfg[group].get('name', '')} {LOCAL_PATHS[key][0]}"
        what = " and ".join(f"{k}=<{LOCAL_PATHS[k][1]}>" for k in missing)
        raise ConfigError(f"{' and '.join(label(k) for k in missing)}: set {what}.")


def check_config(cfg: DictConfig, given: set = frozenset()):
    """Types and ranges of the declared keys, the solvers' step counts, the noise, compute and output paths.
    Normalises the noise mappings in place (see `normalise_noise`)."""
    check_paths(cfg)  # a whole-experiment preset without this machine's model.path / dataset.root
    for key in DECLARED:
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING:
            declared(key, value)
    for path, node in _solver_nodes(cfg.solver):
        for key in node.keys():
            for pattern, (want, minimum, nullable) in SOLVER_DECLARED.items():
                if fnmatch.fnmatchcase(str(key), pattern):
                    check_value(f"{path}.{key}", node.get(key), want, minimum, nullable)
                    break
    normalise_noise(cfg, given)
    if cfg.compute.dtype not in DTYPE_NAMES:
        raise ConfigError(f"compute.dtype={cfg.compute.dtype} is not supported here; use one of {sorted(DTYPE_NAMES)}.")
    prompt = cfg.run.get("prompt", "dataset")
    if prompt is not None and not isinstance(prompt, (str, int)):
        raise ConfigError(f"run.prompt must be dataset, null or one prompt string, got {prompt!r}.")
    _writable("run.root", cfg.run.root, False)
    _writable("run.cache", cfg.run.cache, False)
    _writable("run.leaderboard", cfg.run.leaderboard, True)


def check_cell(cfg: DictConfig, cell):
    """Checks that need the built cell (no compute): a fixed prompt the prior cannot take, each solver's
    step count against the prior's schedule."""
    prompt = cfg.run.get("prompt", "dataset")
    model = cfg.get("names", {}).get("model") or "this model"
    if prompt not in ("dataset", None, ""):
        try:
            cond = cell.prior.embed([str(prompt)])
        except ConfigError as e:
            raise ConfigError(f"run.prompt={prompt!r} is not a condition model {model} takes: {e}") from None
        except Exception as e:  # noqa: BLE001 - a prior's own parse error, in one sentence
            raise ConfigError(f"run.prompt={prompt!r} is not a condition model {model} takes "
                              f"({e.__class__.__name__}: {e}); give one it takes or run.prompt=dataset.") from None
        if cond is None:
            raise ConfigError(f"model {model} is unconditional and takes no prompt, so run.prompt={prompt!r} would be "
                              f"ignored; drop run.prompt (or use a conditional model).")
    elif prompt is None:  # unconditional runs of a conditional prior need its null condition (e.g. a null class)
        cell.prior.embed([""])
    T = getattr(cell.prior, "T", None)
    if isinstance(T, int):
        from solvers.base import at_key_path
        from solvers.common import timesteps

        for path, node in _solver_nodes(cfg.solver):
            if isinstance(node.get("steps"), int) and "spacing" in node:
                try:
                    timesteps(T, int(node.steps), str(node.spacing))
                except ConfigError as e:
                    raise ConfigError(f"{path}.steps={node.steps}: {at_key_path(e, path)}") from None


# -- the command line ------------------------------------------------------------------------------
FLAGS_WITH_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")


def _one_line(e: Exception) -> str:
    text = " ".join(ln.strip() for ln in str(e).split("Config search path")[0].splitlines() if ln.strip())
    return (text[:400] + " ...") if len(text) > 400 else (text or e.__class__.__name__)


def parse(argv: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(list(argv))
    except OverrideParseException as e:
        raise ConfigError(f"cannot parse the override ({_one_line(e)}); write key=value, quoting values "
                          f"with spaces or brackets.") from None


def _is_group(key: str) -> bool:
    key = key.lstrip("+~")
    return key in GROUPS or key.startswith("hydra/") or os.path.isdir(os.path.join(CONF_DIR, key))


def _leaves(node, prefix=""):
    """Every dotted key of a config (nodes and leaves)."""
    out = []
    if isinstance(node, DictConfig) and not node._is_none():
        for k, v in node.items_ex(resolve=False):
            if not prefix and k == "hydra":
                continue
            key = f"{prefix}{k}"
            out.append(key)
            out.extend(_leaves(v, key + "."))
    return out


class Composer:
    """Hydra's compose, once initialised, with Hydra's errors turned into one sentence."""

    def __init__(self):
        from hydra import initialize_config_dir

        self._ctx = initialize_config_dir(config_dir=CONF_DIR, version_base=None)
        self._ctx.__enter__()
        self._cache = {}

    def close(self):
        self._ctx.__exit__(None, None, None)

    def compose(self, overrides: list[str]) -> DictConfig:
        key = tuple(overrides)
        if key not in self._cache:
            from hydra import compose
            from hydra.errors import HydraException
            from omegaconf.errors import OmegaConfBaseException

            try:
                self._cache[key] = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                raise ConfigError(f"Hydra cannot compose this command line: {_one_line(e)}") from None
        return self._cache[key]


def _default(base: DictConfig, key: str):
    """The composed default of a dotted key; _MISSING if the key does not exist, None if its value is '???'."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(base, parent, default=None) if parent else base
    if not isinstance(node, DictConfig) or node._is_none() or leaf not in node.keys():  # keys() holds ??? ones
        return _MISSING
    return OmegaConf.select(base, key, default=None, throw_on_missing=False)


def _some_solver_has(key: str) -> bool:
    """Whether `solver.<leaf>` is a top-level key of any conf/solver/*.yaml."""
    group, _, leaf = key.partition(".")
    if group != "solver" or "." in leaf:
        return False
    folder = os.path.join(CONF_DIR, "solver")
    return any(leaf in OmegaConf.load(os.path.join(folder, f)).keys() for f in os.listdir(folder) if f.endswith(".yaml"))


def _check_job(comp: Composer, job: list):
    """One cell's overrides (parsed, no sweeps): unknown keys, value types against the defaults, check_config."""
    groups = [o.input_line for o in job if _is_group(o.key_or_group)]
    base = comp.compose(groups)
    given = set()
    for o in job:
        key = o.key_or_group
        if _is_group(key) or key.startswith("hydra"):
            continue
        value = o.value()
        default = _default(base, key)
        if o.is_force_add() and default is _MISSING and _some_solver_has(key):
            continue  # ++solver.key of a grid over solvers (sweep.py's budget keys): a solver without that
            #           parameter is refused by its own builder, that cell alone; a key no solver has is a typo
        if o.is_add():
            if default is not _MISSING:
                raise ConfigError(f"{key} exists already (default {default!r}); set it with {key}=... (no '+').")
            continue
        if isinstance(default, ListConfig) and value is not None and not isinstance(value, list):
            raise ConfigError(f"{key} takes a list like its default {OmegaConf.to_container(default)}, got "
                              f"{o.input_line.partition('=')[2]!r}; write {key}=[...].")
        if default is _MISSING:
            parts = key.split(".")
            first = next(i for i in range(1, len(parts) + 1) if _default(base, ".".join(parts[:i])) is _MISSING)
            parent, leaf = ".".join(parts[:first - 1]), parts[first - 1]
            siblings = [k for k in _leaves(base) if not k.rpartition(".")[2].startswith("_")]
            same = [k for k in siblings if k.rpartition(".")[0] == parent]
            close = (difflib.get_close_matches(key, same, n=1, cutoff=0.6)
                     or difflib.get_close_matches(key, [k for k in siblings if not key.startswith(k + ".")], n=1, cutoff=0.8))
            choice = OmegaConf.select(base, f"hydra.runtime.choices.{parent}", default=None)
            where = (f"{parent}{f' {choice}' if choice else ''} has no key {leaf!r}" if parent
                     else f"there is no top-level key {leaf!r}")
            valid = sorted(k.rpartition(".")[2] for k in same)
            raise ConfigError(f"unknown option {key} ({where}); " + (
                f"did you mean {close[0]}?" if close else
                f"the keys there are: {', '.join(valid[:20])}{' ...' if len(valid) > 20 else ''}." if valid else
                f"{parent or 'it'} takes no options; drop {key}."))
        if o.is_delete():
            continue
        given.add(key)
        if "${" in o.input_line.partition("=")[2]:
            continue  # an interpolation: its resolved value is checked by check_config where declared
        want = _kind(default)
        items = value if isinstance(value, list) else [value]  # a number's key may take a range [lo, hi]
        if default is not None and want in TYPE_WORDS and value is not None and not all(_fits(want, v) for v in items):
            raise ConfigError(f"{key} must be {TYPE_WORDS[want]} like its default {default!r}, got {o.input_line.partition('=')[2]!r}.")
    cfg = comp.compose([o.input_line for o in job])
    with open_dict(cfg):
        del cfg["hydra"]
    check_config(cfg, given)


def _sweeper_params(base: DictConfig) -> dict:
    params = OmegaConf.select(base, "hydra.sweeper.params", default=None)
    return {} if params is None else {str(k): str(v) for k, v in params.items()}


def check_command_line(argv: list[str], multirun: bool = False, limit: int = 1000):
    """Refuse a bad command line (every cell of a grid) before torch is imported; one sentence per error."""
    args = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            if a in ("--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--cfg", "-c",
                     "--info", "-i", "--resolve"):
                check_overrides([x for x in argv if not x.startswith("-")])
                return  # Hydra's information modes: it prints, nothing is run
            skip = a in FLAGS_WITH_VALUE and "=" not in a
            if a.partition("=")[0] in ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd"):
                raise ConfigError(f"{a.partition('=')[0]} is not supported here; the configs live in conf/.")
        else:
            args.append(a)
    check_overrides(args)
    parsed = parse(args)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        o = sweeps[0]
        raise ConfigError(f"{o.input_line} lists several values; run a grid with python sweep.py {o.input_line} ... "
                          f"(or give one value).")
    comp = Composer()
    try:
        fixed = [o for o in parsed if not o.is_sweep_override()]
        axes = []
        if multirun:
            from_config = _sweeper_params(comp.compose([o.input_line for o in fixed if _is_group(o.key_or_group)]))
            named = {o.key_or_group for o in parsed}
            lines = [f"{k}={v}" for k, v in from_config.items() if k not in named]
            extra = parse(lines) if lines else []
            fixed += [o for o in extra if not o.is_sweep_override()]
            sweeps = [o for o in extra if o.is_sweep_override()] + sweeps
            for o in sweeps:
                values = list(o.sweep_string_iterator())
                axes.append(parse([f"{o.get_key_element()}={v}" for v in values]))
        n_jobs = 1
        for ax in axes:
            n_jobs *= len(ax)
        for k, combo in enumerate(itertools.product(*axes)):
            if k >= limit:
                break
            try:
                _check_job(comp, fixed + list(combo))
            except ConfigError as e:
                if not combo:
                    raise
                raise ConfigError(f"cell {' '.join(o.input_line for o in combo)}: {e}") from None
    finally:
        comp.close()
