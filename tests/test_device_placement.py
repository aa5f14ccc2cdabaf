"""Bound tasks live on the solve device: no tensor crosses devices inside a task's operator or a solver loop.

The machine running CI has no GPU, so the solve runs on the `meta` device (see tests/transfer_guard.py):
a tensor left on the host (an SVD factor, an index tensor, a kernel, a table, a factory call without a
device) meets the meta data and is recorded as a transfer (or torch refuses the mixed-device op), exactly
where a CUDA run would copy host→device. With a GPU, the last test repeats the solver check on CUDA with
real data and generators, including the solvers whose algorithms take data-dependent decisions.
"""
import copy
import glob
import os

import pytest
import torch
from omegaconf import OmegaConf

from harness.build import instantiate
from harness.cli import CONF_DIR
from core.errors import ConfigError
from core.rng import generators
from tests.transfer_guard import TransferGuard

META = torch.device("meta")
SHAPE = (1, 16, 16)  # the exact world's images; the task configs are sized for it
TASKS = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(CONF_DIR, "task", "*.yaml")))


def build(name):
    return instantiate("task", OmegaConf.load(os.path.join(CONF_DIR, "task", f"{name}.yaml")), image_shape=SHAPE)


def bound_on(task, device, n=2):
    """What the runner does: bind the drawn params, repeat for samples, move to the solve device."""
    return task.bind(task.draw([0, 1], seed=0)).repeat(n).to(device, torch.float32)


def held_tensors(task):
    """Every tensor a bound task (and its SVD) holds: params, attributes, an edit's degradation."""
    out = {f"params.{k}": v for k, v in task.params.items()}
    out.update({k: v for k, v in vars(task).items() if isinstance(v, torch.Tensor)})
    inner = vars(task).get("inner")
    if inner is not None:
        out.update({f"inner.{k}": v for k, v in held_tensors(inner).items()})
    if task.linear and task.has_svd:
        svd = task.cached_svd()
        out.update({f"svd.{k}": v for k, v in vars(svd).items() if isinstance(v, torch.Tensor)})
    return out


@pytest.mark.parametrize("name", TASKS)
def test_a_bound_task_holds_every_tensor_on_the_solve_device_and_dtype(name):
    task = bound_on(build(name), META)
    held = held_tensors(task)
    wrong = {k: (str(v.device), v.dtype) for k, v in held.items()
             if v.device != META or (v.is_floating_point() and v.dtype != torch.float32)
             or (v.is_complex() and v.dtype != torch.complex64)}
    assert not wrong, f"{name}: tensors not on meta/float32 after .to(): {wrong}"


@pytest.mark.parametrize("name", TASKS)
def test_task_operators_move_nothing_between_devices(name):
    task = bound_on(build(name), META)
    x = torch.empty(4, *SHAPE, device=META)
    if task.linear and task.has_svd:
        task.cached_svd()  # once per bound task: computed on the host, moved once (not per call)
    with TransferGuard() as guard:
        y = task.A(x)
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(task.A(xg).sum(), xg)  # the VJP every gradient-guided solver takes
        if task.linear:
            task.At(y)
            task.pinv(y)
            if task.has_svd:
                svd = task.cached_svd()
                s = svd.singulars()
                c = svd.Vt(x)
                svd.V(c)
                svd.U(svd.Ut(y))
                assert s.device == META
    assert guard.events == [], f"{name}: tensors crossed devices in the operator: {guard.events[:5]}"


def meta_world(prior):
    """The exact world on meta: `.to` moves the prior's buffers, its mixture's included (module buffers)."""
    return copy.deepcopy(prior).to(META)


def _tensors(obj, seen=None):
    """Every tensor an object holds, through attributes, modules, dicts and lists (name -> tensor)."""
    seen = set() if seen is None else seen
    out = {}
    if id(obj) in seen:
        return out
    seen.add(id(obj))
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else (
        vars(obj).items() if hasattr(obj, "__dict__") and not isinstance(obj, type) else ())
    for k, v in items:
        if isinstance(v, torch.Tensor):
            out[str(k)] = v
        elif isinstance(v, (dict, list, tuple, torch.nn.Module)) or type(v).__module__.startswith("models"):
            inner = _tensors(v, seen).items()  # a module's _buffers/_modules dicts add no name of their own
            out.update({n if k in ("_buffers", "_modules", "_parameters") else f"{k}.{n}": t for n, t in inner})
    return out


@pytest.mark.parametrize("latent", [False, True])
def test_the_exact_priors_to_moves_every_mixture_tensor_and_keeps_float64(latent):
    from models.gmm import digits_gmm, digits_gmm_latent

    prior = digits_gmm_latent() if latent else digits_gmm()
    host = {k: v for k, v in _tensors(prior).items() if not k.startswith("_sigmas")}  # the σ table: host by design
    assert any("mixture" in k for k in host) and (not latent or any(k.startswith("latent") for k in host))
    moved = {k: v for k, v in _tensors(copy.deepcopy(prior).to(META)).items() if k in host}
    assert moved.keys() == host.keys()
    assert {k: str(v.device) for k, v in moved.items() if v.device != META} == {}
    mix = {k: v for k, v in moved.items() if k.startswith(("mixture", "latent"))}
    assert mix and all(v.dtype == torch.float64 for v in mix.values())  # the closed forms stay float64
    cast = _tensors(copy.deepcopy(prior).to(torch.float32))
    assert all(cast[k].dtype == torch.float64 for k in mix)  # a dtype conversion never casts the mixture
    same = _tensors(copy.deepcopy(prior).to(torch.float64))
    assert all(torch.equal(same[k], host[k]) for k in mix)
    other = digits_gmm_latent() if latent else digits_gmm()  # the fit is cached: moving one prior moves no other
    assert all(v.device.type == "cpu" for k, v in _tensors(other).items() if k.startswith(("mixture", "latent")))


def solver(name, steps=3):
    cfg = OmegaConf.load(os.path.join(CONF_DIR, "solver", f"{name}.yaml"))
    if "steps" in cfg:
        cfg.steps = steps
    return instantiate("solver", cfg)


# Solvers whose loops are pure tensor maths run on meta. DAPS (.item() on its σ grid), ReSample (nonzero)
# and the CG of PSLD-like updates take data-dependent decisions, which meta tensors cannot: the CUDA test covers them.
META_SOLVERS = ["dps", "ddrm", "ddnm", "pigdm", "ddim", "reddiff", "diffpir", "mcg", "freedom", "pinv"]
META_TASKS = ["sr4_bicubic", "deblur_gauss", "deblur_gauss_circ", "inpaint_box", "deblur_motion"]


@pytest.mark.parametrize("task_name", META_TASKS)
@pytest.mark.parametrize("solver_name", META_SOLVERS)
def test_solver_loops_move_nothing_between_devices(prior, solver_name, task_name):
    world, sol = meta_world(prior), solver(solver_name)
    task = bound_on(build(task_name), META, n=1)
    if not sol.needs <= (world.provides | task.provides):
        pytest.skip(f"{solver_name} does not take {task_name}")
    y = torch.empty_like(task.A(torch.empty(2, *SHAPE, device=META)))
    if task.has_svd:
        task.cached_svd()
    with TransferGuard(META, fake_generators=True) as guard:
        out = sol.solve(world, task, y, generators([0, 1], "s"))
    assert out.device == META
    assert guard.events == [], f"{solver_name} on {task_name}: {len(guard.events)} transfers, e.g. {guard.events[:5]}"


@pytest.mark.parametrize("mode,task_name", [("sample", "sr4_bicubic"), ("sample", "inversion"), ("roundtrip", "inversion")])
def test_bdia_loops_move_nothing_between_devices(prior, mode, task_name):
    """BDIA (both modes) on the meta device. Its round trip takes y as the image itself (needs `identity`):
    on bicubic SR y is 4×4, which the harness refuses before compute (solver.check, below); calling solve
    anyway fed a 16-pixel y to a 256-dimensional mixture: the broadcast error once seen here, not a bug."""
    world, sol = meta_world(prior), solver("bdia")
    sol.mode = mode
    task = bound_on(build(task_name), META, n=1)
    assert sol.needs <= (world.provides | task.provides)
    y = torch.empty_like(task.A(torch.empty(2, *SHAPE, device=META)))
    with TransferGuard(META, fake_generators=True) as guard:
        out = sol.solve(world, task, y, generators([0, 1], "s"))
    assert out.device == META and out.shape == (2, *SHAPE)
    assert guard.events == [], f"bdia {mode} on {task_name}: {guard.events[:5]}"
    roundtrip = solver("bdia")
    with pytest.raises(ConfigError, match="solver bdia needs the image itself as y"):
        roundtrip.check(prior, build("sr4_bicubic"))


def test_the_guard_sees_a_host_tensor_meeting_device_data():
    """The check can fail: an operator that keeps its factor on the host (as tasks did before) is caught."""
    host = torch.ones(16, 16, dtype=torch.float64)
    x = torch.empty(2, 1, 16, 16, device=META)
    with TransferGuard() as guard:
        host.to(x) @ x
    assert guard.events and "cpu" in guard.events[0] and "meta" in guard.events[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("solver_name", [*META_SOLVERS, "daps", "resample"])
def test_solver_loops_on_cuda_move_nothing(prior, solver_name):
    cuda = torch.device("cuda")
    world = copy.deepcopy(prior).to(cuda)
    task = bound_on(build("sr4_bicubic"), cuda, n=1)
    sol = solver(solver_name)
    x = prior.sample_prior(generators([0, 1], "truth")).to(cuda)
    y = task.A(x)
    task.cached_svd()
    with TransferGuard() as guard:
        sol.solve(world, task, y, generators([0, 1], "s", device=cuda))
    assert guard.events == [], guard.events[:5]
