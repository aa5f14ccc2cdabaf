"""Bad input, tried as a user would: wrong command lines of run.py and sweep.py in subprocesses.

Each one must exit 2 with one line on stderr (`error: ...`), no traceback, nothing under run.root,
run.cache or the leaderboard, and no solver step (the run folder, made before the first batch, never
exists). Most are refused by harness/validate.py before torch is imported; the rest (a prompt on an
unconditional prior, a dataset too small, a truncated image, steps beyond the schedule) right after the
cell is built. The cases run two at a time (each is a Python start-up).
"""
from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.files import REPO_ROOT as ROOT

# (id, script, arguments ({tmp}: this test's folder, {file}: a plain file, {pngs}: images, one truncated),
#  a fragment the one-line message must contain)
CASES = [
    # text where a number belongs, and numbers out of range
    ("steps_text", "run", ["solver.steps=abc"], "solver.steps must be an integer"),
    ("seed_text", "run", ["seed=abc"], "seed must be an integer"),
    ("seed_float", "run", ["seed=1.5"], "seed must be an integer"),
    ("seed_bool", "run", ["seed=true"], "seed must be an integer"),
    ("batch_text", "run", ["compute.batch_size=abc"], "compute.batch_size must be an integer"),
    ("samples_text", "run", ["run.num_samples=abc"], "run.num_samples must be an integer"),
    ("eta_text", "run", ["solver.eta=abc"], "solver.eta must be a number"),
    ("factor_text", "run", ["task=sr4", "task.factor=abc"], "task.factor must be an integer"),
    ("progress_int", "run", ["run.progress=3"], "run.progress must be true or false"),
    ("compile_word", "run", ["compute.compile=maybe"], "compute.compile must be true or false"),
    ("lpips_scalar", "run", ["metrics.lpips=vgg"], "metrics.lpips takes a list"),
    ("grid_negative", "run", ["run.grid_images=-1"], "run.grid_images must be >= 0"),
    ("steps_zero", "run", ["solver.steps=0"], "solver.steps must be at least 1"),
    ("steps_negative", "run", ["solver=ddim", "solver.steps=-5"], "solver.steps must be at least 1"),
    ("steps_null", "run", ["solver.steps=null"], "solver.steps must be an integer, got null"),
    ("batch_zero", "run", ["compute.batch_size=0"], "compute.batch_size must be at least 1"),
    ("samples_zero", "run", ["run.num_samples=0"], "run.num_samples must be at least 1"),
    ("n_zero", "run", ["dataset.n=0"], "dataset.n must be at least 1"),
    ("start_negative", "run", ["dataset.start=-1"], "dataset.start must be >= 0"),
    ("n_ref_zero", "run", ["metrics.n_ref=0"], "metrics.n_ref must be at least 1"),
    ("workers_negative", "run", ["compute.num_workers=-1"], "compute.num_workers must be >= 0"),
    ("dtype_unknown", "run", ["compute.dtype=int8"], "compute.dtype=int8 is not supported"),
    # misspelled or unknown keys and names, Hydra's own errors
    ("key_typo", "run", ["solver.stepz=10"], "did you mean solver.steps?"),
    ("key_typo_eta", "run", ["solver.zeta=1"], "did you mean solver.eta?"),
    ("key_unknown_top", "run", ["nosuchkey=1"], "there is no top-level key 'nosuchkey'"),
    ("delete_unknown", "run", ["~solver.stepz"], "did you mean solver.steps?"),
    ("append_existing", "run", ["+solver.steps=3"], "solver.steps exists already"),
    ("solver_unknown", "run", ["solver=nope"], "unknown solver 'nope'"),
    ("task_unknown", "run", ["task=sr5"], "unknown task 'sr5'"),
    ("experiment_unknown", "run", ["+experiment=nope"], "unknown experiment 'nope'"),
    ("launcher_unknown", "run", ["hydra/launcher=nope"], "Could not find 'hydra/launcher/nope'"),
    ("parse_error", "run", ["solver.steps=[1"], "cannot parse the override"),
    ("no_equals", "run", ["solver.steps"], "cannot parse the override"),
    ("seed_empty", "run", ["seed="], "seed must be an integer"),
    ("hydra_key_unknown", "run", ["hydra.nope=1"], "Could not override 'hydra.nope'"),
    ("sweep_in_run", "run", ["solver=dps,ddim"], "lists several values; run a grid with python sweep.py"),
    # noise kinds
    ("noise_kind_unknown", "run", ["task.noise.kind=laplace"], "unknown noise kind 'laplace'"),
    ("noise_other_param", "run", ["task.noise.kind=poisson", "task.noise.sigma=0.1"],
     "task.noise.sigma is not a parameter of poisson noise (it takes rate)"),
    ("noise_sigma_negative", "run", ["task.noise.sigma=-1"], "noise sigma must be >= 0"),
    # output locations
    ("root_under_file", "run", ["run.root={file}/runs"], "lies under the file"),
    ("root_is_file", "run", ["run.root={file}"], "is a file, not a folder"),
    ("root_in_proc", "run", ["run.root=/proc/diffinv_bad/runs"], "run.root=/proc/diffinv_bad/runs cannot be written"),
    ("cache_under_file", "run", ["run.cache={file}/cache"], "run.cache={file}/cache lies under the file"),
    ("leaderboard_is_folder", "run", ["run.leaderboard={tmp}"], "is a folder; set run.leaderboard to a CSV file"),
    ("leaderboard_in_proc", "run", ["run.leaderboard=/proc/diffinv_bad/lb.csv"], "cannot be written"),
    # refused once the cell is built (still before any file or solver step)
    ("prompt_unconditional", "run", ["run.prompt=a dog"], "model digits is unconditional and takes no prompt"),
    ("n_beyond_split", "run", ["dataset.n=1000"], "asks for more than the 200 images of the digits test split"),
    ("steps_beyond_schedule", "run", ["solver.steps=2000"], "steps must be in 1..1000"),
    ("png_truncated", "run", ["dataset=ffhq", "dataset.root={pngs}", "dataset.id_range=[0,3]"],
     "00001.png is not a readable image"),
    ("folder_n_too_large", "run", ["dataset=ffhq", "dataset.root={pngs}", "dataset.id_range=[0,1]", "dataset.n=5"],
     "lists 1 ids, so dataset.n=5"),
    # sweep.py
    ("sweep_key_typo", "sweep", ["solver=dps,ddim", "solver.stepz=10"], "did you mean solver.steps?"),
    ("sweep_value_text", "sweep", ["solver=ddim", "solver.steps=10,abc"], "solver.steps must be an integer"),
    ("sweep_name_unknown", "sweep", ["solver=dps,nope"], "unknown solver 'nope'"),
    ("sweep_root_under_file", "sweep", ["solver=dps,ddim", "run.root={file}/x"], "lies under the file"),
    ("aggregate_text_metric", "sweep", ["--aggregate", "--root={tmp}/agg", "--leaderboard={tmp}/runs/agg.csv",
                                        "--metrics", "run"], "run is not a numeric summary column"),
    ("aggregate_no_runs", "sweep", ["--aggregate", "--root={tmp}/runs/none", "--leaderboard={tmp}/runs/agg.csv"],
     "no finished runs under"),
]


def _setup(tmp):
    from PIL import Image

    (tmp / "a_file").write_text("not a folder\n")
    pngs = tmp / "pngs"
    pngs.mkdir()
    for i in range(3):
        Image.new("L", (16, 16), color=40 * i).save(pngs / f"{i:05d}.png")
    data = (pngs / "00001.png").read_bytes()
    (pngs / "00001.png").write_bytes(data[: len(data) // 2])  # a valid header, truncated pixel data
    agg = tmp / "agg" / "some_run"
    agg.mkdir(parents=True)
    (agg / "summary.csv").write_text("run,solver,task,psnr\nsome_run,dps,inpaint_box,20.5\n")
    return {"tmp": str(tmp), "file": str(tmp / "a_file"), "pngs": str(pngs)}


def _command(script, args, paths):
    args = [a.format(**paths) for a in args]
    io = [f"run.root={paths['tmp']}/runs", f"run.cache={paths['tmp']}/cache",
          f"run.leaderboard={paths['tmp']}/runs/leaderboard.csv", f"hydra.sweep.dir={paths['tmp']}/sweeps"]
    if script == "run" or "--aggregate" not in args:
        args = [*io, *args]  # the case's own paths come last, so they win
    return [sys.executable, os.path.join(ROOT, f"{script}.py"), *args]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    paths = _setup(tmp)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}

    def one(case):
        cid, script, args, _ = case
        cwd = tmp / "cwd" / cid  # relative outputs (Hydra's sweep folder) land here, never in the checkout
        cwd.mkdir(parents=True)
        p = subprocess.run(_command(script, args, paths), cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600)
        return cid, (p, cwd)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(one, CASES))
    return paths, done


def test_at_least_forty_distinct_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({(c[1], tuple(c[2])) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("cid,script,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_exit_2_before_anything(outcomes, cid, script, args, message):
    paths, done = outcomes
    p, cwd = done[cid]
    err = p.stderr.strip()
    print(f"BAD-INPUT | {script}.py {' '.join(args)} | {err}")  # the table of messages (pytest -rP shows it)
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], err[-2000:])
    assert "Traceback" not in p.stdout + p.stderr, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message.format(**paths) in err, err
    assert "run=" not in p.stdout  # no cell summary: nothing was solved
    for sub in ("runs", "cache"):  # no run folder (made before the first batch), no measurement cache
        assert not os.path.exists(os.path.join(paths["tmp"], sub)), (cid, os.listdir(os.path.join(paths["tmp"], sub)))
    assert not any(os.scandir(cwd)), (cid, os.listdir(cwd))


def test_a_refused_cell_of_a_sweep_fails_the_sweep(tmp_path):
    """The other cells run; sweep.py exits 2 and names the refused cell and why."""
    args = [f"run.root={tmp_path}/runs", f"run.cache={tmp_path}/cache", f"run.leaderboard={tmp_path}/lb.csv",
            f"hydra.sweep.dir={tmp_path}/sweeps", "+experiment=gmm", "solver=dps,ddrm", "task=hdr", "solver.steps=20",
            "dataset.n=1", "run.progress=false"]
    p = subprocess.run([sys.executable, os.path.join(ROOT, "sweep.py"), *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT})
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stdout + p.stderr
    assert "error: 1 cell(s) of the sweep did not run:" in p.stderr
    assert "solver=ddrm" in p.stderr.split("did not run:")[1]
    assert "run=" in p.stdout  # the dps cell ran


# -- in-process: what the checks accept, and the noise kinds ------------------------------------------
def _conf_names(group):
    return sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "conf", group)) if f.endswith(".yaml"))


def _needs_paths(exp: str) -> bool:
    from harness.cli import compose

    from core.errors import ConfigError
    from harness.validate import check_paths
    try:  # the harness's own rule: ??? or an unset ${oc.env:VAR,???} (latent presets override a hub id so)
        check_paths(compose([f"+experiment={exp}"]))
    except ConfigError:
        return True
    return False


def test_every_shipped_config_passes_the_command_line_checks(tmp_path):
    """No false refusals: every solver, task, dataset-free experiment and grid as shipped is accepted."""
    from harness.validate import check_command_line

    io = [f"run.root={tmp_path}/runs", f"run.cache={tmp_path}/cache", f"run.leaderboard={tmp_path}/lb.csv"]
    for solver in _conf_names("solver"):
        check_command_line([*io, f"solver={solver}"])
    for task in _conf_names("task"):
        check_command_line([*io, f"task={task}"])
    for exp in _conf_names("experiment"):  # whole-experiment presets leave this machine's paths open: give them
        paths = [f"model.path={tmp_path}", f"dataset.root={tmp_path}"] if _needs_paths(exp) else []
        check_command_line([*io, f"+experiment={exp}", *paths], multirun=exp.startswith("grid_"))
    check_command_line([*io, "task=inpaint_random", "task.p=[0.3,0.7]", "dataset.n=null", "run.prompt=null",
                        "solver=dps", "solver.steps=10", "seed=-3", "task.noise.kind=poisson", "task.noise.rate=20"])
    assert not os.listdir(tmp_path)  # the writability probe leaves nothing behind


def test_a_new_option_is_type_checked_from_its_default(tmp_path):
    """The generic rule: the type of a key's composed default, whatever config defines it."""
    from harness import validate
    from core.errors import ConfigError

    io = [f"run.root={tmp_path}/r", f"run.cache={tmp_path}/c", f"run.leaderboard={tmp_path}/l.csv"]
    for solver, bad, word in (("ddnm", "solver.travel_length=abc", "an integer"), ("dps", "solver.scale=x", "a number"),
                              ("dps", "task.shared=1", "true or false"), ("dps", "solver.dsg.interval=2.5", "an integer")):
        with pytest.raises(ConfigError, match=f"{bad.partition('=')[0]} must be {word}"):
            validate.check_command_line([*io, f"solver={solver}", "task=inpaint_random", bad])


def test_noise_kind_alone_switches_and_other_kinds_parameters_leave_the_cell(make_cfg):
    from harness.build import instantiate
    from harness.runner import cell_config

    gauss = make_cfg()
    assert dict(gauss.task.noise) == {"kind": "gaussian", "sigma": 0.05, "space": "[-1,1]"}  # identity as before
    poisson = make_cfg("task.noise.kind=poisson")
    assert dict(poisson.task.noise) == {"kind": "poisson", "rate": 255.0}
    task = instantiate("task", poisson.task, image_shape=(1, 16, 16))
    assert task.noise.describe()["poisson_rate"] == 255.0 and not task.noise.gaussian
    assert cell_config(make_cfg("task.noise.kind=poisson", "task.noise.rate=20"))["task"]["noise"]["rate"] == 20
    none = make_cfg("task.noise.kind=none")
    assert dict(none.task.noise) == {"kind": "none"}


def test_make_noise_ignores_other_kinds_and_refuses_unknown_parameters():
    from core.errors import ConfigError
    from tasks.noise import NOISE_PARAMS, make_noise

    assert NOISE_PARAMS == {"gaussian": ("sigma", "space"), "poisson": ("rate",), "none": ()}
    assert make_noise({"kind": "gaussian", "sigma": 0.1, "space": "[0,1]", "rate": 3}).sigma_y == pytest.approx(0.2)
    assert make_noise({"kind": "poisson", "sigma": 0.1}).rate == 255.0
    with pytest.raises(ConfigError, match="task.noise.sigmaa is not a noise parameter"):
        make_noise({"kind": "gaussian", "sigma": 0.1, "sigmaa": 1})


def test_output_paths_are_probed_without_leaving_files(tmp_path):
    from harness.validate import _writable
    from core.errors import ConfigError

    _writable("run.root", tmp_path / "new" / "deeper", False)
    _writable("run.leaderboard", tmp_path / "lb.csv", True)
    assert not os.listdir(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="lies under the file"):
        _writable("run.cache", tmp_path / "f" / "c", False)
    if os.geteuid() != 0:  # root writes anywhere: permission bits cannot be tested as root
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match="cannot be written"):
            _writable("run.root", ro / "runs", False)
