"""One way to do each thing: solver parameters (cfg_scale), the typed condition, needs, config defaults."""
import pytest
import torch

from harness.build import instantiate
from models.base import Condition
from core.errors import ConfigError


def test_cfg_scale_is_a_constructor_parameter_and_nested_solvers_use_their_own(make_cfg):
    cfg = make_cfg("model=digits_latent", "solver=stsl_edit", "task=edit_sr4", "+solver.restore.cfg_scale=1.0",
                   world=None)
    solver = instantiate("solver", cfg.solver)
    assert solver.restore.cfg_scale == 1.0 and solver.edit.cfg_scale is None
    cond = Condition(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2))
    assert solver.restore.condition(cond).scale == 1.0 and solver.edit.condition(cond).scale is None
    assert solver.describe()["restore"]["cfg_scale"] == 1.0 and "cfg_scale" not in solver.describe()["edit"]


def test_a_nested_solvers_error_names_the_key_path_a_user_types(make_cfg):
    cfg = make_cfg("model=digits_latent", "solver=stsl_edit", "task=edit_sr4", "+solver.restore.cfg_scale=-1",
                   world=None)
    with pytest.raises(ConfigError, match=r"solver\.restore\.cfg_scale must be"):
        instantiate("solver", cfg.solver)


# -- every solver config builds, and a solver's own config states its constructor's defaults -------------
import inspect  # noqa: E402
from pathlib import Path  # noqa: E402

from hydra.utils import get_object  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from harness.build import build_cell  # noqa: E402

SOLVER_CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "solver").glob("*.yaml"))


def _world_overrides(solver, world):
    """Model and task overrides that meet the solver's needs in this world (None: it cannot be served)."""
    from solvers.base import Solver

    needs = solver.needs | {n for part in vars(solver).values() if isinstance(part, Solver) for n in part.needs}
    if "exact" in needs and world != "gmm":
        return None
    model = {"gmm": "gmm_latent", None: "digits_latent"}[world] if "latent" in needs else {"gmm": "gmm", None: "digits"}[world]
    task = "edit_sr4" if "edit" in needs else "inversion" if "identity" in needs else "inpaint_box"
    if task == "edit_sr4" and world == "gmm":
        return None  # the editors need a prompt-taking prior: the digits world's latent model
    return [f"model={model}", f"task={task}"]


def _defaults_match(node, group):
    fn = get_object(node["_target_"])
    params = inspect.signature(fn).parameters
    for key, value in node.items():
        if key in ("_target_", "tune"):  # tune: the ranges of sweep.py --tune, never a constructor argument
            continue
        if isinstance(value, dict) and "_target_" in value:
            _defaults_match(value, f"{group}.{key}")
            continue
        default = params[key].default
        if default is inspect.Parameter.empty:
            continue
        default = list(default) if isinstance(default, tuple) else default
        if isinstance(default, dict) or default is None and isinstance(value, dict):
            continue  # a dict parameter merges the config's keys into its own defaults
        assert value == default, f"{group}.{key}: config says {value!r}, {fn.__name__}() defaults to {default!r}"


@pytest.mark.parametrize("name", SOLVER_CONFIGS)
def test_every_solver_config_builds_in_the_gmm_and_digits_worlds(make_cfg, name):
    built = 0
    for world in ("gmm", None):
        solver = instantiate("solver", make_cfg(f"solver={name}", world=world).solver)
        overrides = _world_overrides(solver, world)
        if overrides is None:
            continue
        cell = build_cell(make_cfg(f"solver={name}", *overrides, world=world))  # includes solver.check
        assert cell.solver.describe() == solver.describe()
        built += 1
    assert built >= 1, f"solver={name} could be built in neither world"


@pytest.mark.parametrize("name", SOLVER_CONFIGS)
def test_a_solvers_own_config_states_its_constructor_defaults(make_cfg, name):
    node = OmegaConf.to_container(make_cfg(f"solver={name}").solver, resolve=True)
    solver = instantiate("solver", node)
    if solver.name != name:
        pytest.skip(f"solver={name} is a variant of {solver.name} (its own choices, on purpose)")
    _defaults_match(node, "solver")


# -- requirements are stated once, in needs ----------------------------------------------------------------
def test_parameter_dependent_requirements_are_needs():
    from solvers.ddnm import DDNM
    from solvers.graikos import Graikos
    from solvers.pigdm import PiGDM
    from solvers.reddiff import REDDiff

    assert "svd" in DDNM(plus=True).needs and "svd" not in DDNM().needs
    assert "linear" in REDDiff(init="pinv").needs and "linear" not in REDDiff(init="zeros").needs
    assert "mask" in Graikos(direction="mask").needs and "mask" not in Graikos().needs
    assert "svd" in PiGDM(inverse="svd").needs and "svd" not in PiGDM(inverse="auto").needs


# -- the prior's VE / denoiser view ------------------------------------------------------------------------
def test_the_prior_exposes_the_ve_view_once(prior):
    a = prior.alphas_cumprod
    assert prior.sigmas == ((1 - a) / a).sqrt().tolist()
    assert all(prior.sigma_to_t(prior.sigmas[k]) == k for k in (0, 17, 500, 999))
    x = torch.randn(2, *prior.state_shape, dtype=torch.float64)
    torch.testing.assert_close(prior.sigma(300, x).flatten(), torch.full((1,), prior.sigmas[300], dtype=torch.float64))
    assert float(prior.sigma(-1, x)) == 0.0
    torch.testing.assert_close(prior.denoise(x, 300), prior.x0(prior.abar(300, x).sqrt() * x, 300))


# -- each distinct prompt is encoded once --------------------------------------------------------------------
def test_each_distinct_prompt_is_encoded_once(tiny_text_prior):
    from solvers.ddim import DDIM
    from core.rng import generators

    calls = []
    hook = tiny_text_prior.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        tiny_text_prior._null.clear()
        y = torch.zeros(2, *tiny_text_prior.image_shape)
        DDIM(steps=3).solve(tiny_text_prior, None, y, generators(range(2), "u"), None)  # unconditional: 3 UNet calls
        assert calls == [1]  # the null prompt, once
        calls.clear()
        cond = tiny_text_prior.embed(["a cat", "a cat", "a dog", "a dog"])
        assert calls == [2] and torch.equal(cond.cond[0], cond.cond[1]) and not torch.equal(cond.cond[1], cond.cond[2])
    finally:
        hook.remove()


def test_a_nested_solvers_run_time_error_names_the_key_path_a_user_types(make_cfg):
    """A setting a part refuses only once it runs (steps above the prior's T) names solver.restore.X."""
    from harness.runner import run_cell

    cfg = make_cfg("+experiment=digits_edit", "task=edit_sr4", "solver=stsl_edit", "solver.restore.steps=100000",
                   "solver.restore.inner=1", "solver.edit.steps=4", "dataset.n=1", world=None)
    with pytest.raises(ConfigError, match=r"set solver\.restore\.steps\."):
        run_cell(cfg)


def test_solvers_take_gradients_one_way():
    """Every solver's gradient goes through solvers/common.py (loss_grad / guided_prediction): no solver file
    calls .backward() or torch.autograd.grad itself."""
    import ast
    from pathlib import Path

    found = []
    for f in sorted(Path(__file__).resolve().parents[1].glob("solvers/*.py")):
        if f.name == "common.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and (node.attr == "backward" or (
                    node.attr == "grad" and ast.unparse(node.value).endswith("autograd"))):
                found.append(f"{f.name}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
