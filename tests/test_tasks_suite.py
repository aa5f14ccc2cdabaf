"""The forward-operator suite: adjoints, SVDs, seeding, kernels, bicubic vs PIL, nonlinear tasks, configs."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import get_object
from PIL import Image

from tasks.blur import GaussianBlur
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting, FreeFormInpainting, RandomInpainting
from tasks.motion import MotionBlur
from tasks.noise import make_noise
from tasks.nonlinear import HDR, JPEGQuant, PhaseRetrieval
from core.rng import generators
from tasks.sr import AvgPoolSR, BicubicSR

from core.files import REPO_ROOT as ROOT
SHAPE = (1, 16, 16)
RGB = (3, 16, 16)

LINEAR = {
    "box": lambda s: BoxInpainting(s, box=6, margin=1),
    "random": lambda s: RandomInpainting(s, p=[0.3, 0.7]),
    "freeform": lambda s: FreeFormInpainting(s),
    "avgpool4": lambda s: AvgPoolSR(s, factor=4),
    "bicubic_matlab": lambda s: BicubicSR(s, factor=4),
    "bicubic_torch": lambda s: BicubicSR(s, factor=4, kernel="torch"),
    "bicubic_x2": lambda s: BicubicSR(s, factor=2),
    "gauss_reflect": lambda s: GaussianBlur(s, kernel_size=9, sigma=1.0),
    "gauss_circular": lambda s: GaussianBlur(s, kernel_size=9, sigma=1.0, boundary="circular"),
    "motion_reflect": lambda s: MotionBlur(s, kernel_size=9),
    "motion_circular": lambda s: MotionBlur(s, kernel_size=9, boundary="circular"),
}
NONLINEAR = {
    "phase": lambda s: PhaseRetrieval(s),
    "phase01": lambda s: PhaseRetrieval(s, to01=True),
    "hdr": lambda s: HDR(s),
    "jpeg": lambda s: JPEGQuant(s, quality=25),
}


def bound(make, shape=SHAPE, ids=(0, 1), seed=0):
    task = make(shape)
    return task.bind(task.draw(list(ids), seed)).to("cpu", torch.float64)


def rand(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [SHAPE, RGB])
@pytest.mark.parametrize("name", sorted(LINEAR))
def test_adjoint(name, shape):
    """<A x, y> = <x, Aᵀ y> in float64, per sample, with per-image parameters."""
    task = bound(LINEAR[name], shape)
    x = rand((2, *shape), 1)
    y = rand(task.A(x).shape, 2)
    lhs, rhs = (task.A(x) * y).flatten(1).sum(1), (x * task.At(y)).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10 * lhs.abs().max().item())


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_svd_reconstructs_operator_and_pinv(name):
    """U S Vᵀ x = A x, Vᵀ V = I (V orthonormal), Uᵀ U = I, and A A⁺ A = A, per sample."""
    task = bound(LINEAR[name])
    assert task.has_svd
    svd = task.svd()
    x = rand((2, *SHAPE), 3)
    Ax = task.A(x)
    scale = Ax.abs().max()
    assert (svd.A(x) - Ax).abs().max() < 1e-10 * scale
    c = rand((2, x[0].numel()), 4)
    assert (svd.Vt(svd.V(c)) - c).abs().max() < 1e-10
    assert (svd.V(svd.Vt(x)) - x).abs().max() < 1e-10
    u = rand((2, svd.m), 5)
    assert (svd.Ut(svd.U(u)) - u).abs().max() < 1e-10
    assert (task.A(task.pinv(Ax)) - Ax).abs().max() < 1e-8 * scale


def test_dense_svd_limit_is_honest():
    """Reflect motion blur has no structured SVD: dense fallback only up to 4096 values."""
    assert MotionBlur((1, 64, 64), kernel_size=9).has_svd
    big = MotionBlur((3, 64, 64), kernel_size=9)
    assert not big.has_svd and big.svd() is None and "svd" not in big.provides
    assert GaussianBlur((3, 64, 64), kernel_size=9, sigma=1.0).has_svd  # separable: any size
    assert not PhaseRetrieval(SHAPE).has_svd and "linear" not in HDR(SHAPE).provides


def test_circular_blur_is_periodic_correlation():
    """The FFT operator equals torch's conv2d (cross-correlation) on a circularly padded image."""
    task = bound(LINEAR["motion_circular"])
    x = rand((2, *SHAPE), 6)
    ref = torch.stack([torch.nn.functional.conv2d(torch.nn.functional.pad(x[i: i + 1], (4,) * 4, mode="circular"),
                                                  task.kernel[i][None, None])[0] for i in range(2)])
    assert (task.A(x) - ref).abs().max() < 1e-12


def _draw_bytes(name, seed, ids):
    task = (LINEAR | NONLINEAR)[name](SHAPE)
    params = task.draw(list(ids), seed)
    x = torch.linspace(-1, 1, 256).reshape(1, *SHAPE).repeat(len(ids), 1, 1, 1)
    y = task.bind(params).measure(x, generators(ids, seed, "noise"))
    return b"".join(v.numpy().tobytes() for v in params.values()) + y.numpy().tobytes()


SEEDED = ["random", "freeform", "box", "motion_reflect"]


@pytest.mark.parametrize("name", SEEDED)
def test_same_config_id_seed_same_draw_and_noise(name):
    assert _draw_bytes(name, 7, [3]) == _draw_bytes(name, 7, [3])
    assert _draw_bytes(name, 7, [3]) != _draw_bytes(name, 7, [4])  # another image, another mask/kernel/noise
    task = LINEAR[name](SHAPE)
    a, b = task.draw([3], 7), task.draw([4], 7)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(task.draw([5, 3], 7)[next(iter(a))][1], a[next(iter(a))][0])  # batch-independent


def test_draws_identical_across_processes():
    code = ("import sys; sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r});"
            "from test_tasks_suite import _draw_bytes, SEEDED;"
            "sys.stdout.buffer.write(b''.join(_draw_bytes(n, 7, [3, 11]) for n in SEEDED))")
    out = subprocess.run([sys.executable, "-c", code.format(root=ROOT, tests=os.path.join(ROOT, "tests"))],
                         capture_output=True, check=True, cwd=ROOT).stdout
    assert out == b"".join(_draw_bytes(n, 7, [3, 11]) for n in SEEDED)


def test_motion_kernel():
    task = MotionBlur((1, 128, 128), kernel_size=61, intensity=0.5)
    k = task.draw([0, 1, 2], 0)["kernel"]
    assert k.shape == (3, 61, 61)
    assert torch.allclose(k.sum((1, 2)), torch.ones(3, dtype=k.dtype), atol=1e-12) and (k >= 0).all()
    assert not torch.equal(k[0], k[1]) and not torch.equal(k[1], k[2])
    # centre of mass at the centre, so the blur does not shift the image
    r = torch.arange(61, dtype=k.dtype) - 30
    assert (k.sum(2) @ r).abs().max() < 1.0 and (k.sum(1) @ r).abs().max() < 1.0


def test_random_inpainting_fraction_and_channels():
    m = RandomInpainting(RGB, p=0.92).draw([0, 1], 0)["mask"]
    assert m.shape == (2, 1, 16, 16)  # one mask shared by all channels
    assert torch.allclose(1 - m.mean((1, 2, 3)), torch.full((2,), round(0.92 * 256) / 256))
    frac = 1 - RandomInpainting(SHAPE, p=[0.3, 0.7]).draw(list(range(20)), 0)["mask"].mean((1, 2, 3))
    assert (frac >= 0.3 - 1 / 256).all() and (frac < 0.7 + 1 / 256).all() and frac.std() > 0.02


def test_freeform_hole_fraction_in_range():
    frac = 1 - FreeFormInpainting(SHAPE, hole=[0.1, 0.4]).draw(list(range(20)), 0)["mask"].mean((1, 2, 3))
    assert (frac >= 0.1).all() and (frac <= 0.4).all()


# Measured on a random 64x64 image in [-1, 1] resized to 16x16 (x4): torch's antialiased bicubic matches
# PIL's BICUBIC everywhere to ~2e-8 (PIL's float32 arithmetic). The MATLAB-style resize matches PIL to ~1e-8
# away from the border but differs by up to ~0.07 (on a [-1, 1] scale) in the outer two output rows and
# columns, because MATLAB mirrors out-of-image taps while PIL drops them and renormalises.
def test_bicubic_x4_vs_pil():
    x = rand((1, 1, 64, 64), 8).clamp(-3, 3) / 3
    pil = Image.fromarray(x[0, 0].float().numpy(), mode="F").resize((16, 16), Image.BICUBIC)
    ref = torch.tensor(np.asarray(pil), dtype=torch.float64)
    torch_y = BicubicSR((1, 64, 64), factor=4, kernel="torch").A(x)[0, 0]
    matlab_y = BicubicSR((1, 64, 64), factor=4).A(x)[0, 0]
    assert (torch_y - ref).abs().max() < 1e-6
    assert (matlab_y - ref)[2:-2, 2:-2].abs().max() < 1e-6
    assert 1e-3 < (matlab_y - ref).abs().max() < 0.2  # the documented border difference


def test_bicubic_dps_transpose_is_not_the_adjoint():
    task = BicubicSR(SHAPE, factor=4, transpose="dps").to("cpu", torch.float64)
    y = rand((1, 1, 4, 4), 9)
    assert torch.equal(task.At(y), torch.nn.functional.interpolate(y, scale_factor=4, mode="nearest"))
    assert "not an adjoint" in task.describe()["transpose"]
    x = rand((1, *SHAPE), 10)
    assert abs((task.A(x) * y).sum() - (x * task.At(y)).sum()) > 1e-3


@pytest.mark.parametrize("name", sorted(NONLINEAR))
def test_nonlinear_shapes(name):
    task = NONLINEAR[name](RGB)
    assert task.linear is False and "linear" not in task.provides
    x = rand((2, *RGB), 11).clamp(-1, 1)
    y = task.A(x)
    expect = (2, 3, 24, 24) if name.startswith("phase") else (2, *RGB)
    assert y.shape == expect and torch.isfinite(y).all()
    assert task.display(y).shape == (2, *RGB)


def test_phase_retrieval_sign_invariance():
    x = rand((2, *SHAPE), 12).clamp(-1, 1)
    plain, to01 = PhaseRetrieval(SHAPE), PhaseRetrieval(SHAPE, to01=True)
    assert torch.allclose(plain.A(x), plain.A(-x), atol=1e-12)
    assert (to01.A(x) - to01.A(-x)).abs().max() > 1e-2
    # Parseval: the orthonormal FFT keeps the energy of the padded image
    assert torch.allclose((plain.A(x) ** 2).sum((1, 2, 3)), (x ** 2).sum((1, 2, 3)))


def test_hdr_and_jpeg_values():
    x = rand((1, *SHAPE), 13).clamp(-1, 1)
    assert torch.equal(HDR(SHAPE).A(x), (2 * x).clamp(-1, 1))
    j = JPEGQuant(SHAPE, quality=10)
    assert torch.allclose(j.A(j.A(x)), j.A(x), atol=1e-9)  # quantisation is idempotent
    assert (JPEGQuant(SHAPE, quality=100).A(x) - x).abs().max() < 0.02


@pytest.mark.parametrize("make", [
    lambda: AvgPoolSR(SHAPE, factor=3),
    lambda: BicubicSR(SHAPE, factor=5),
    lambda: BoxInpainting(SHAPE, box=20, placement="centred"),
    lambda: BoxInpainting(SHAPE, box=14, margin=2),
    lambda: GaussianBlur(SHAPE, kernel_size=17),
    lambda: GaussianBlur(SHAPE, kernel_size=8),
    lambda: MotionBlur(SHAPE, kernel_size=61),
    lambda: MotionBlur(SHAPE, kernel_size=9, intensity=2.0),
    lambda: RandomInpainting(SHAPE, p=1.5),
    lambda: FreeFormInpainting(SHAPE, hole=[0.5, 0.2]),
    lambda: JPEGQuant((1, 12, 12)),
])
def test_bad_sizes_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


NOISES = [{"kind": "gaussian", "sigma": 0.05}, {"kind": "gaussian", "sigma": 0.05, "space": "[0,1]"},
          {"kind": "poisson", "rate": 50.0}, {"kind": "none"}]


@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n["kind"] + n.get("space", ""))
def test_every_operator_composes_with_every_noise(noise):
    x = rand((2, *SHAPE), 14).clamp(-1, 1).float()
    for name, make in (LINEAR | NONLINEAR).items():
        task = make(SHAPE)
        task.noise = make_noise(noise)  # same operator, another noise model
        b = task.bind(task.draw([0, 1], 0))
        y = b.measure(x, generators([0, 1], 0, "noise"))
        assert y.shape == b.A(x).shape and torch.isfinite(y).all(), name
        if noise["kind"] == "none":
            assert torch.equal(y, b.A(x))
        else:
            assert not torch.equal(y, b.A(x))


CONFIGS = sorted(glob.glob(os.path.join(ROOT, "conf", "task", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_task_configs_instantiate_and_measure(path):
    spec = yaml.safe_load(open(path))
    task = get_object(spec.pop("_target_"))(image_shape=SHAPE, **spec)
    x = torch.rand(2, *SHAPE) * 2 - 1
    b = task.bind(task.draw([0, 1], 0))
    y = b.measure(x, generators([0, 1], 0, "noise"))
    assert torch.isfinite(y).all() and b.display(y).shape == (2, *SHAPE)
    assert isinstance(task.describe(), dict) and task.describe()


PRESETS = sorted(glob.glob(os.path.join(ROOT, "conf", "experiment", "*.yaml")))


@pytest.mark.parametrize("path", PRESETS, ids=os.path.basename)
def test_experiment_presets_compose_on_256px(path):
    """Each preset's task builds at its model's image side: 512 px for Stable Diffusion, 256 px otherwise."""
    from harness.build import instantiate
    from harness.cli import compose

    name = os.path.basename(path)[:-5]
    cfg = compose([f"+experiment={name}"])
    side = 512 if str(cfg.model.get("name", "")).startswith("sd") else 256
    task = instantiate("task", cfg.task, image_shape=(3, side, side))
    if "noise" in cfg.task:  # the edit preset regenerates the clean image: no measurement noise
        noise = cfg.task.noise
        # the published measurement noises: none (Graikos et al.'s notebooks), σ_y 0 (DiffPIR inpainting, RED-diff),
        # 0.01 (ReSample) and 0.05 (DPS, DAPS, PSLD, STSL, DSG)
        assert noise.get("kind") == "none" or noise.sigma in (0.0, 0.01, 0.05), (name, noise)
    assert task.describe()
