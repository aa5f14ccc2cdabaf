"""The edit task family: the Edit task's delegation to its degradation, editing by the inversion solvers
(target = source reproduces the exact round trip; partial strength counts), restore-then-edit, the
target-class score, prompts from the config and per-solver CFG scales, and refusals before compute."""
import copy

import pytest
import torch

import solvers.bdia as bdia
from models.latent import LatentPrior
from solvers.bdia import BDIA
from solvers.ddim_inversion import DDIMInversion
from solvers.edict import EDICT
from solvers.null_text import NullTextInversion
from solvers.restore_edit import RestoreThenEdit
from solvers.stsl import STSL
from tasks.edit import Edit
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from tasks.inversion import Inversion
from core.rng import generators
from tasks.sr import AvgPoolSR
from tests.latent_world import save_class_latent

SHAPE = (3, 16, 16)
SR4 = {"_target_": "tasks.sr.AvgPoolSR", "factor": 4, "noise": {"kind": "gaussian", "sigma": 0.05}}


@pytest.fixture(scope="module")
def latent64(tmp_path_factory):
    """A tiny class-conditional latent prior in float64 (exactness checks)."""
    p = LatentPrior(str(save_class_latent(tmp_path_factory.mktemp("edit_latent"), seed=5)), name="tiny", guidance_scale=2.0)
    p.vae.double(), p.unet.double()
    p.net_dtype = torch.float64
    return p


def images(n, seed=0, dtype=torch.float64):
    return (torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1) * 0.8


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# -- the task ----------------------------------------------------------------------------------------
def test_edit_task_is_its_degradation_plus_a_target():
    clean = Edit(SHAPE, target="8")
    assert clean.provides == frozenset({"linear", "gaussian_noise", "svd", "identity", "edit"})
    x = images(2, dtype=torch.float32)
    assert torch.equal(clean.bind(clean.draw([0, 1], 0)).measure(x, generators([0, 1], "n")), x)

    edit = Edit(SHAPE, target="8", degradation=SR4)
    sr = AvgPoolSR(SHAPE, {"kind": "gaussian", "sigma": 0.05}, factor=4)
    assert edit.sigma_y == 0.05 and "identity" not in edit.provides  # a corrupted source: restore first
    assert {"linear", "svd", "gaussian_noise", "edit"} <= edit.provides
    b, bs = edit.bind(edit.draw([0, 1], 0)), sr.bind(sr.draw([0, 1], 0))
    assert torch.equal(b.measure(x, generators([0, 1], "n")), bs.measure(x, generators([0, 1], "n")))
    y = bs.A(x)
    assert torch.allclose(b.pinv(y), bs.pinv(y)) and torch.allclose(b.At(y), bs.At(y))
    assert b.repeat(2).index([3]).A(x[:1]).shape == (1, 3, 4, 4)
    assert b.describe()["target"] == "8" and b.describe()["degradation_factor"] == 4
    assert b.clean().provides >= {"identity", "edit"} and b.clean().target == "8"

    box = Edit(SHAPE, target="1", degradation={"_target_": "tasks.inpaint.BoxInpainting", "box": 4})
    bb = box.bind(box.draw([0], 3))
    assert "mask" in box.provides and bb.mask.shape[0] == 1  # Graikos's mask direction sees through the edit


@pytest.mark.parametrize("kwargs, match", [({"target": ""}, "task.target"),
                                           ({"degradation": {"factor": 4}}, "_target_"),
                                           ({"degradation": {"_target_": "tasks.sr.NoSuchSR"}}, "names no task"),
                                           ({"degradation": {"_target_": "tasks.sr.AvgPoolSR", "fctr": 4}}, "does not take")])
def test_edit_task_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Edit(SHAPE, **{"target": "8", **kwargs})


# -- editing with the inversion solvers ----------------------------------------------------------
def edit_task(target):
    t = Edit(SHAPE, target=target)
    return t.bind(t.draw([0, 1], 0))


@pytest.mark.parametrize("solver", [BDIA(steps=6, gamma=0.94), BDIA(steps=6, strength=0.5), EDICT(steps=6),
                                    EDICT(steps=6, strength=0.5)], ids=["bdia", "bdia-half", "edict", "edict-half"])
def test_editing_towards_the_source_is_the_exact_round_trip(latent64, solver):
    """Target = source condition: regeneration retraces the inversion exactly (to the VAE round trip);
    another target changes the image."""
    x = images(2)
    src = latent64.embed(["3", "5"])
    z = latent64.encode(x)
    with torch.no_grad():
        same = solver.solve(latent64, edit_task("3"), x, generators(range(2), "e"), latent64.embed(["3", "3"]))
        vae = latent64.decode(z)
        assert rel(same, vae) < 1e-8
        other = solver.solve(latent64, edit_task("8"), x, generators(range(2), "e"), src)
    assert rel(other, vae) > 1e-3


@pytest.mark.parametrize("strength, top", [(1.0, 6), (0.5, 3), (0.01, 1)])
def test_partial_inversion_costs(latent64, strength, top):
    x, cond = images(2), latent64.embed(["3", "3"])  # guided: 2 NFE per evaluation
    cases = [(BDIA(steps=6, strength=strength), 2 * top - 1), (EDICT(steps=6, strength=strength), 4 * top),
             (DDIMInversion(steps=6, strength=strength), 2 * top)]
    for solver, evaluations in cases:
        latent64.cost.reset()
        with torch.no_grad():
            solver.solve(latent64, edit_task("8"), x, generators(range(2), "c"), cond)
        assert latent64.cost.nfe / 2 == 2 * evaluations and latent64.cost.vjp == 0, solver.name
        assert solver.top == top


def test_null_text_edit_chain(latent64):
    """The edit chain uses the optimised nulls with the target: 2 NFE per step more than the
    reconstruction; with target = source it is the reconstruction itself."""
    x = images(2)
    nti = NullTextInversion(steps=3, inner=2, tol=0.0, tol_growth=0.0)
    cond = latent64.embed(["3", "3"])
    latent64.cost.reset()
    rec = nti.solve(latent64, Inversion(SHAPE), x, generators(range(2), "n"), cond)
    base = latent64.cost.nfe / 2
    latent64.cost.reset()
    same = nti.solve(latent64, edit_task("3"), x, generators(range(2), "n"), cond)
    assert latent64.cost.nfe / 2 == base + 2 * 3
    assert rel(same, rec) < 1e-8
    other = nti.solve(latent64, edit_task("8"), x, generators(range(2), "n"), cond)
    assert rel(other, rec) > 1e-3


def test_restore_then_edit_runs_the_restorer_then_the_editor(latent64):
    task = Edit(SHAPE, target="8", degradation=SR4)
    bound = task.bind(task.draw([0, 1], 0))
    y = bound.measure(images(2), generators([0, 1], "noise"))
    cond = latent64.embed(["3", "3"])
    solver = RestoreThenEdit(STSL(steps=2, inner=1), BDIA(steps=4))
    solver.check(latent64, task)
    latent64.cost.reset()
    out = solver.solve(latent64, bound, y, generators(range(2), "r"), cond)
    nfe_restore = 2 * (2 * 1 + 1)  # STSL: K·2 + 1 evaluations per step
    assert out.shape == (2, *SHAPE) and latent64.cost.nfe / 2 == 2 * (nfe_restore + 2 * 4 - 1)
    assert latent64.cost.vjp / 2 == 2 * 2  # STSL's two UNet VJPs per inner step; BDIA none
    d = solver.describe()
    assert d["restore"]["name"] == "stsl" and d["edit"]["gamma"] == 1.0


def test_edit_refusals(latent64, prior):
    with pytest.raises(ConfigError, match="conditional prior"):
        BDIA().check(prior, Edit((1, 16, 16), target="8"))  # the exact GMM prior takes no prompt
    with pytest.raises(ConfigError, match="not one of the 10 classes"):
        EDICT().check(latent64, Edit(SHAPE, target="cat"))
    with pytest.raises(ConfigError, match="restore_edit"):
        DDIMInversion().check(latent64, Edit(SHAPE, degradation=SR4))  # a corrupted source must be restored
    with pytest.raises(ConfigError, match="restore_edit"):
        BDIA().check(latent64, BoxInpainting(SHAPE, {"kind": "gaussian", "sigma": 0.05}))
    with pytest.raises(ConfigError, match="edit task"):
        RestoreThenEdit(STSL(), BDIA()).check(latent64, AvgPoolSR(SHAPE, {"kind": "gaussian", "sigma": 0.05}))
    with pytest.raises(ConfigError, match="inversion-family"):
        RestoreThenEdit(STSL(), STSL())
    with pytest.raises(ConfigError, match="strength"):
        BDIA(strength=0)
    BDIA(mode="sample").check(latent64, AvgPoolSR(SHAPE, {"kind": "gaussian", "sigma": 0.05}))  # sampling needs no image


# -- the target-class score ----------------------------------------------------------------------
def test_target_scores_on_real_digits():
    from data.digits import digits_tensors
    from metrics.edit import edit_scores, load_classifier, target_index

    x, labels = digits_tensors("test")
    fn = load_classifier("models.digits_classifier:logits")
    threes = x[labels == 3][:16]  # the 16 threes of the 200 test digits
    s = edit_scores(fn, threes, target_index("3"))
    assert s["target_acc"].mean() == 1.0 and (s["target_prob"] > 0.5).all()
    assert edit_scores(fn, threes, 8)["target_acc"].mean() == 0.0
    with pytest.raises(ConfigError, match="CLIP"):
        target_index("a cat")
    with pytest.raises(ConfigError, match="module:function"):
        load_classifier("digits_classifier")
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_classifier("models.digits_classifier:nope")


def test_digits_dataset_class_filter(prior):
    from data.digits import DigitsDataset

    ds = DigitsDataset(prior, n=5, classes=3)
    assert len(ds) == 5 and all(c == "3" for _, c in map(ds.load, ds.ids))
    assert ds.describe()["dataset_classes"] == "3"
    assert "dataset_classes" not in DigitsDataset(prior, n=5).describe()  # unchanged cache keys without it
    with pytest.raises(ConfigError, match="classes"):
        DigitsDataset(prior, classes=[12])


# -- from the harness ----------------------------------------------------------------------------
def test_digits_edit_from_the_harness(make_cfg):
    from harness.runner import run_cell

    s = run_cell(make_cfg("+experiment=digits_edit", "solver=bdia", "solver.steps=8", "dataset.n=2", world=None))
    assert s["n_ok"] == 2 and 0 <= s["target_acc"] <= 1 and 0 <= s["target_prob"] <= 1
    assert s["nfe"] == 2 * (2 * 8 - 1) and s["dataset_classes"] == "3"  # CFG 2.0: 2 NFE per evaluation
    assert '"target": "8"' in s["task_params"] and s["edit_classifier"] == "models.digits_classifier:logits"

    s = run_cell(make_cfg("+experiment=digits_edit", "task=edit_sr4", "solver=stsl_edit", "solver.restore.steps=2",
                          "solver.restore.inner=1", "solver.edit.steps=4", "dataset.n=1", world=None))
    assert s["n_ok"] == 1 and s["nfe"] == 2 * (2 * 3 + 7) and s["vjp"] == 4


def test_prompts_from_the_config_and_solver_cfg_scales(make_cfg, tmp_path):
    import pandas as pd

    from harness.runner import run_cell

    base = ("model=digits_latent", "task=inpaint_box", "solver=psld", "solver.steps=3", "dataset.n=1")
    runs = {name: run_cell(make_cfg(*base, *over, world=None)) for name, over in
            {"dataset": [], "null": ["run.prompt=null"], "fixed": ["run.prompt=7"],
             "own_scale": ["solver.cfg_scale=1.0"]}.items()}
    assert runs["dataset"]["nfe"] == 6 and runs["fixed"]["nfe"] == 6  # the model's CFG 2.0: 2 NFE per step
    assert runs["null"]["nfe"] == 3 and runs["own_scale"]["nfe"] == 3  # unconditional / conditional branch only
    assert len({r["run"] for r in runs.values()}) == 4  # each setting is its own cell
    rows = {k: pd.read_csv(tmp_path / "runs" / r["run"] / "images.csv") for k, r in runs.items()}
    assert rows["fixed"]["prompt"].astype(str).tolist() == ["7"] and rows["null"]["prompt"].isna().all()
    assert rows["dataset"]["prompt"].astype(str).tolist() != ["7"]
    assert '"cfg_scale": 1.0' in runs["own_scale"]["solver_params"]


def test_bad_prompt_and_scale_fail_before_compute(make_cfg, tmp_path):
    from harness.runner import run_cell

    with pytest.raises(ConfigError, match="not one of the 10 classes"):
        run_cell(make_cfg("model=digits_latent", "solver=psld", "run.prompt=cat", world=None))
    with pytest.raises(ConfigError, match="cfg_scale"):
        run_cell(make_cfg("model=digits_latent", "solver=psld", "solver.cfg_scale=-1", world=None))
    assert not (tmp_path / "runs").exists()


def test_copying_an_edit_task_keeps_its_degradation():
    t = Edit(SHAPE, degradation=SR4)
    c = copy.copy(t)
    assert c.inner is t.inner and copy.deepcopy(t).inner.factor == 4
    with pytest.raises(AttributeError):
        Edit.__new__(Edit).At  # noqa: B018 - no recursion through __getattr__ before init
