"""The VQ latent diffusion prior (diffusers' LDMPipeline layout: vqvae/ VQModel, unconditional unet/ UNet2DModel,
scheduler/) on a tiny random folder: the official decode (through the codebook, gradients straight through), the
unquantized and unscaled encoder output, counted costs, the weights fingerprint, offline errors, and ReSample,
latent DPS and PSLD run from the harness on it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from core.errors import ConfigError
from harness.cli import REPO_ROOT
from tests.helpers import png
from tests.latent_world import save_tiny_ldm


@pytest.fixture(scope="module")
def ldm(tmp_path_factory):
    return save_tiny_ldm(tmp_path_factory.mktemp("tiny_ldm"))


@pytest.fixture(scope="module")
def prior(ldm):
    from models.latent import LatentPrior
    return LatentPrior(str(ldm), name="ldm_ffhq256")


def nearest_code(vq, z):
    """The codebook entry nearest to each latent position (written out: squared distances, argmin)."""
    book = vq.quantize.embedding.weight  # [n_codes, C]
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    idx = ((flat[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
    return book[idx].reshape(z.shape[0], z.shape[2], z.shape[3], z.shape[1]).permute(0, 3, 1, 2)


def test_the_ldm_layout_loads_as_an_unconditional_vq_latent_prior(prior):
    assert prior.vq and prior.is_latent and prior.image_shape == (3, 16, 16) and prior.state_shape == (3, 4, 4)
    d = prior.describe()
    assert (d["autoencoder"], d["quantize"], d["conditioning"], d["model"]) == ("vq", True, "none", "ldm_ffhq256")
    assert len(d["weights_sha"]) == 12
    assert prior.embed(["", ""]) is None and prior.nfe_per_call(None) == 1
    # LDM's linear betas 0.0015..0.0195 on sqrt scale (diffusers scaled_linear), 1000 steps
    betas = torch.linspace(0.0015 ** 0.5, 0.0195 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(prior.alphas_cumprod, torch.cumprod(1 - betas, 0))
    # the VQModel config's scaling_factor default (0.18215) is not applied: LDMPipeline and scale_factor 1.0
    assert prior.vae.config.scaling_factor != 1.0 and prior.scaling == 1.0


def test_encode_is_the_unquantized_encoder_output_and_decode_goes_through_the_codebook(prior):
    vq = prior.vae
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        h = vq.quant_conv(vq.encoder(x))  # LDM encode_first_stage: encoder + quant_conv, no quantization
        assert torch.equal(prior.encode(x), h)
        z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
        official = vq.decoder(vq.post_quant_conv(nearest_code(vq, z)))  # force_not_quantize=False
        assert torch.allclose(prior.decode(z), official, atol=1e-5)
        assert not torch.allclose(vq.decoder(vq.post_quant_conv(z)), official, atol=1e-3)  # quantizing matters here
    # straight-through gradient: d/dz D(q(z)) = (∂D/∂q at q(z))ᵀ
    zg = z.clone().requires_grad_(True)
    prior.decode(zg).square().sum().backward()
    q = nearest_code(vq, z).detach().requires_grad_(True)
    vq.decoder(vq.post_quant_conv(q)).square().sum().backward()
    assert torch.allclose(zg.grad, q.grad, atol=1e-4)


def test_quantize_false_decodes_the_latent_directly(ldm):
    from models.latent import LatentPrior
    p = LatentPrior(str(ldm), name="x", quantize=False)
    z = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(p.decode(z), p.vae.decoder(p.vae.post_quant_conv(z)), atol=1e-6)
    assert p.describe()["quantize"] is False


def test_costs_are_counted_and_float64_runs(ldm, prior):
    from models.latent import LatentPrior
    prior.cost.reset()
    x = torch.zeros(3, 3, 16, 16)
    z = prior.encode(x).requires_grad_(True)
    prior.decode(z).sum().backward()
    prior.eps(z.detach(), 10)
    c = prior.cost.snapshot()
    assert (c["encode"], c["decode"], c["decode_vjp"], c["nfe"], c["vjp"]) == (3, 3, 3, 3, 0)
    p64 = LatentPrior(str(ldm), name="x", dtype="float64")
    out = p64.decode(p64.encode(x.double()))
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_the_weights_fingerprint_follows_the_weights(tmp_path, prior):
    from models.latent import LatentPrior
    other = LatentPrior(str(save_tiny_ldm(tmp_path / "other", seed=1)), name="ldm_ffhq256")
    assert other.describe()["weights_sha"] != prior.describe()["weights_sha"]


def test_classifier_free_guidance_is_refused_on_the_unconditional_model(ldm):
    from models.latent import LatentPrior
    with pytest.raises(ConfigError, match="unconditional.*model.guidance_scale=1"):
        LatentPrior(str(ldm), guidance_scale=3.0)


@pytest.mark.parametrize("drop, named", [("unet/config.json", "unet/config.json"),
                                         ("vqvae", "vae/config.json .*or vqvae/config.json"),
                                         ("scheduler/scheduler_config.json", "scheduler/scheduler_config.json")])
def test_a_missing_file_is_one_sentence_naming_it(tmp_path, ldm, drop, named):
    from models.latent import LatentPrior
    d = tmp_path / "ldm"
    shutil.copytree(ldm, d)
    target = d / drop
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ConfigError, match=named):
        LatentPrior(str(d), name="ldm_ffhq256")


def test_run_py_with_an_incomplete_folder_exits_2_before_writing(tmp_path, ldm):
    d = tmp_path / "ldm"
    shutil.copytree(ldm, d)
    (d / "unet" / "config.json").unlink()
    r = subprocess.run([sys.executable, "run.py", "model=ldm_ffhq256", f"model.path={d}", "task=sr4", "solver=psld",
                        f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/c"],
                       cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "unet/config.json" in lines[0] and "model.path=" in lines[0], r.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lb.csv").exists()


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = tmp_path_factory.mktemp("ffhq")
    for i in range(2):
        png(root / f"{i:05d}.png", 32, 32)
    return root


# (overrides, NFE per sample, UNet VJPs per sample), from each solver's definition on this unconditional prior
SOLVERS = {
    "resample": (["task=sr4", "solver=resample", "solver.steps=3", "solver.skip=1", "solver.travel=1",
                  "solver.pixel_iters=3", "solver.latent_iters=2"], 3 + 2, 3),  # HDC at r = 2, 1: +1 NFE each
    "dps": (["task=inpaint_box", "solver=dps", "solver.steps=3"], 3, 3),
    "psld": (["task=inpaint_box", "solver=psld", "solver.steps=3"], 3, 3),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_latent_solvers_run_from_the_harness_on_the_ldm_prior(ldm, faces, make_cfg, tmp_path, name):
    from harness.runner import run_cell
    over, nfe, vjp = SOLVERS[name]
    cfg = make_cfg("model=ldm_ffhq256", f"model.path={ldm}", "dataset=ffhq", f"dataset.root={faces}",
                   "dataset.n=2", *over, world=None)
    s = run_cell(cfg)
    assert s["n_ok"] == 2 and s["n_diverged"] == 0
    assert s["nfe"] == nfe and s["vjp"] == vjp
    assert '"autoencoder": "vq"' in s["model_params"] and '"quantize": true' in s["model_params"]
    row = pd.read_csv(tmp_path / "leaderboard.csv").iloc[-1]
    assert row["model"] == "ldm_ffhq256" and row["solver"] == name
