"""Network priors on tiny random diffusers models saved locally: loading, conventions, cost, errors."""
import json
import time

import pytest
import torch

from data.base import Dataset
from models.diffusers_pixel import DiffusersPixelPrior
from solvers.dps import DPS
from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from core.rng import generators


def tiny_unet(channels=1, learned_variance=False, seed=0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=16, in_channels=channels, out_channels=channels * (2 if learned_variance else 1),
                       layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"))


def save_pixel(tmp, unet, prediction="epsilon", layout="pipeline", **sched):
    from diffusers import DDPMPipeline, DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction, **sched)
    if layout == "pipeline":
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp)
    else:  # UNet at the root, scheduler_config.json beside it
        unet.save_pretrained(tmp)
        scheduler.save_config(tmp)
    return str(tmp)


@pytest.fixture(scope="module")
def pixel_dir(tmp_path_factory):
    return save_pixel(tmp_path_factory.mktemp("pixel"), tiny_unet())


def test_pixel_prior_loads_offline_with_shapes_schedule_and_record(pixel_dir):
    from models.base import linear_alphas_cumprod

    prior = DiffusersPixelPrior(pixel_dir, name="tiny", dtype="float32")
    assert prior.image_shape == prior.state_shape == (1, 16, 16) and not prior.is_latent
    assert prior.alphas_cumprod.dtype == torch.float64
    assert torch.allclose(prior.alphas_cumprod, linear_alphas_cumprod(1000), rtol=0, atol=1e-12)
    rec = prior.describe()
    assert rec["path"] == pixel_dir and rec["prediction"] == "epsilon" and rec["dtype"] == "float32"
    out = prior.network(torch.randn(2, 1, 16, 16), torch.tensor([10, 500]))
    assert out.shape == (2, 1, 16, 16) and out.dtype == torch.float32


def test_model_layout_and_learned_variance(tmp_path):
    unet = tiny_unet(channels=3, learned_variance=True)
    prior = DiffusersPixelPrior(save_pixel(tmp_path, unet, layout="model"))
    assert prior.image_shape == (3, 16, 16) and prior.describe()["learned_variance"]
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    eps = prior.eps(x, t)
    with torch.no_grad():
        raw = unet(x, t).sample
    assert eps.shape == (2, 3, 16, 16)
    assert torch.allclose(eps, raw[:, :3], atol=1e-5) and torch.allclose(prior.last_variance, raw[:, 3:], atol=1e-5)


def test_v_prediction_identities(tmp_path):
    """Same weights read as v: x_t = √ᾱ x̂0 + √(1-ᾱ) ε̂ and v = √ᾱ ε̂ - √(1-ᾱ) x̂0 must hold."""
    unet = tiny_unet(seed=3)
    prior = DiffusersPixelPrior(save_pixel(tmp_path, unet, prediction="v_prediction"))
    assert prior.prediction == "v"
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0, 400, 999])
    eps, x0 = prior.predict(x, t)
    v = prior.network(x, t)
    a = prior.abar(t, x)
    assert torch.allclose(a.sqrt() * x0 + (1 - a).sqrt() * eps, x, atol=1e-5)
    assert torch.allclose(a.sqrt() * eps - (1 - a).sqrt() * x0, v, atol=1e-5)


def test_nfe_and_vjp_are_counted_per_sample(pixel_dir):
    prior = DiffusersPixelPrior(pixel_dir)
    x = torch.randn(3, 1, 16, 16, requires_grad=True)
    _, x0 = prior.predict(x, 500)
    assert prior.cost.nfe == 3 and prior.cost.vjp == 0
    (g,) = torch.autograd.grad(x0.square().sum(), x)
    assert prior.cost.vjp == 3 and g.shape == x.shape and torch.isfinite(g).all()
    assert not any(p.requires_grad for p in prior.parameters())  # only the input gets gradients


def test_dps_runs_on_a_tiny_network_prior(pixel_dir):
    prior = DiffusersPixelPrior(pixel_dir)
    task = BoxInpainting((1, 16, 16), {"sigma": 0.05}, box=6, margin=1)
    ids = [0, 1]
    bound = task.bind(task.draw(ids, 0))
    y = bound.measure(torch.rand(2, 1, 16, 16) * 2 - 1, generators(ids, "noise"))
    x = DPS(steps=5, scale=0.5).solve(prior, bound, y, generators(ids, "dps"))
    assert x.shape == (2, 1, 16, 16) and torch.isfinite(x).all()
    assert prior.cost.nfe == 2 * 5 and prior.cost.vjp == 2 * 5


def test_offline_hub_id_fails_fast_in_one_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        DiffusersPixelPrior("nobody-here/not-a-cached-model-xyz")
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "nobody-here/not-a-cached-model-xyz" in msg and "model.path=" in msg and "\n" not in msg
    assert msg.count(". ") == 0 and msg.endswith(".")


def test_local_path_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        DiffusersPixelPrior(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="unet/config.json"):
        DiffusersPixelPrior(str(tmp_path))
    d = save_pixel(tmp_path / "m", tiny_unet(), layout="model")
    (tmp_path / "m" / "scheduler_config.json").unlink()
    with pytest.raises(ConfigError, match="scheduler_config.json"):
        DiffusersPixelPrior(d)


def test_sample_prediction_and_bad_dtype_are_config_errors(tmp_path, pixel_dir):
    d = save_pixel(tmp_path, tiny_unet(), prediction="sample")
    with pytest.raises(ConfigError, match="sample"):
        DiffusersPixelPrior(d)
    with pytest.raises(ConfigError, match="dtype"):
        DiffusersPixelPrior(pixel_dir, dtype="int8")
    sched = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "sample"


# -- the compute group ---------------------------------------------------------------------------
class TinyImages(Dataset):
    """Seeded smooth random images for a network prior (the harness's dataset interface)."""

    name, split = "tiny_images", "test"

    def __init__(self, prior, n: int = 2, start: int = 0, seed: int = 0, split: str = "test"):
        self.ids, self.shape, self.seed = list(range(start, start + n)), prior.image_shape, seed

    def batch(self, ids):
        from core.rng import generator, rand

        x = torch.cat([rand([generator("tiny", self.seed, i)], (self.shape[0], 4, 4)) for i in ids]) * 2 - 1
        return torch.nn.functional.interpolate(x, size=self.shape[1:], mode="bilinear"), [None] * len(ids)

    def describe(self):
        return {"dataset": self.name, "split": self.split, "dataset_seed": self.seed}


def net_cfg(make_cfg, pixel_dir, *overrides):
    return make_cfg("model=diffusers_pixel", f"model.path={pixel_dir}", "dataset._target_=tests.test_net_models.TinyImages",
                    "dataset.n=2", "run.num_samples=1", "solver.steps=4", "task.box=6", "compute=cpu", *overrides)


@pytest.mark.parametrize("overrides,message", [
    (["compute.dtype=float16"], "float16 needs a CUDA device"),
    (["compute.dtype=float64"], "float64 is for exact priors"),
    (["compute.dtype=int8"], "compute.dtype=int8 is not supported"),
    (["compute.compile=maybe"], "compute.compile must be true or false"),
    (["compute.num_workers=-1"], "num_workers must be >= 0"),
])
def test_compute_validation_before_compute(make_cfg, pixel_dir, overrides, message):
    from harness.build import build_cell

    with pytest.raises(ConfigError, match=message):
        build_cell(net_cfg(make_cfg, pixel_dir, *overrides))


def test_half_dtype_on_the_exact_prior_is_refused(make_cfg):
    from harness.build import build_cell

    with pytest.raises(ConfigError, match="has no network to run in bfloat16"):
        build_cell(make_cfg("compute=cpu", "compute.dtype=bfloat16"))


def test_float64_exact_prior_run(make_cfg):
    from harness.runner import run_cell

    s = run_cell(make_cfg("compute=cpu", "compute.dtype=float64", "solver.steps=10", "dataset.n=2",
                          "run.num_samples=2"))
    assert s["n_ok"] == 2 and s["dtype"] == "float64" and s["nfe"] == 10


def test_bfloat16_network_dps_run_keeps_solver_state_float32(make_cfg, pixel_dir):
    from harness.build import build_cell
    from harness.runner import run_cell

    cfg = net_cfg(make_cfg, pixel_dir, "compute.dtype=bfloat16", "compute.channels_last=true")
    cell = build_cell(cfg)
    assert cell.dtype == torch.float32 and cell.prior.net_dtype == torch.bfloat16
    assert next(cell.prior.unet.parameters()).dtype == torch.bfloat16
    assert cell.prior.describe()["dtype"] == "bfloat16"
    s = run_cell(cfg)
    assert s["n_ok"] == 2 and s["nfe"] == 4 and s["vjp"] == 4 and s["dtype"] == "bfloat16"


def test_weights_fingerprint_names_the_weights_not_the_path(tmp_path, pixel_dir):
    """Rows record which weights ran; retrained weights at the same path give a new run (its hash includes it)."""
    from harness.runner import run_name
    from harness.cli import compose

    a = save_pixel(tmp_path / "a", tiny_unet(seed=0))
    b = save_pixel(tmp_path / "b", tiny_unet(seed=1))
    fa, fb = DiffusersPixelPrior(str(a)).describe()["weights_sha"], DiffusersPixelPrior(str(b)).describe()["weights_sha"]
    assert fa != fb and fa == DiffusersPixelPrior(str(a)).describe()["weights_sha"]
    name = lambda d: run_name(compose(["model=digits", f"model.path={d}", "dataset.n=2"]))  # noqa: E731
    assert name(a) != name(b)  # the paths alone would give one name (they are not in the identity)
