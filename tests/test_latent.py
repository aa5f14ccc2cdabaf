"""LatentPrior on tiny random Stable-Diffusion-layout directories (CLIP text, or class-embedding table)."""

import pytest
import torch

from models.latent import LatentPrior
from solvers.ddim import DDIM
from core.errors import ConfigError
from core.rng import generators
from tests.latent_world import DIM, SEQ, save_class_latent, save_parts, tiny_parts


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    return save_class_latent(tmp_path_factory.mktemp("digits_latent"), seed=2)


def test_text_prior_shapes_schedule_and_record(sd_dir):
    prior = LatentPrior(str(sd_dir), name="tiny_sd", guidance_scale=3.0)
    assert prior.is_latent and "latent" in prior.provides
    assert prior.state_shape == (4, 8, 8) and prior.image_shape == (3, 16, 16)
    sd_betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(prior.alphas_cumprod, torch.cumprod(1 - sd_betas, 0), rtol=0, atol=1e-12)
    rec = prior.describe()
    assert rec["conditioning"] == "text" and rec["guidance_scale"] == 3.0 and rec["dtype"] == "float32"
    c = prior.embed(["a cat"])
    assert c.cond.shape == c.uncond.shape == (1, SEQ, DIM)
    assert not torch.allclose(c.cond, c.uncond)


def test_cfg_is_one_batched_call_counted_twice(sd_dir):
    prior = LatentPrior(str(sd_dir), guidance_scale=3.0)
    cond = prior.embed(["a cat", "a dog"])
    x, t = torch.randn(4, 4, 8, 8), torch.tensor([10, 10, 700, 700])  # 2 images x 2 samples
    calls = []
    prior.unet.register_forward_hook(lambda m, a, k: calls.append(a[0].shape[0]))
    out = prior.eps(x, t, cond)
    assert calls == [8] and prior.cost.nfe == 8
    with torch.no_grad():  # the guided ε against two separate conditional / unconditional evaluations
        h = cond.cond.repeat_interleave(2, 0)
        e_c = prior.unet(x, t, encoder_hidden_states=h).sample
        e_u = prior.unet(x, t, encoder_hidden_states=cond.uncond.expand(4, -1, -1)).sample
    assert torch.allclose(out, e_u + 3.0 * (e_c - e_u), atol=1e-5)


def test_ddim_in_latent_space_with_cfg(sd_dir):
    prior = LatentPrior(str(sd_dir), guidance_scale=2.0)
    n, steps = 2, 3
    y = torch.zeros(n, 3, 16, 16)
    x = DDIM(steps=steps).solve(prior, None, y, generators(range(n), "ddim"), cond=prior.embed(["a cat"]))
    assert x.shape == (n, 3, 16, 16) and torch.isfinite(x).all()
    assert prior.cost.nfe == 2 * steps * n and prior.cost.decode == n and prior.cost.vjp == 0
    prior.cost.reset()
    DDIM(steps=steps).solve(prior, None, y, generators(range(n), "ddim"))  # unconditional: 1 NFE per step
    assert prior.cost.nfe == steps * n


def test_encode_decode_shapes_and_counted_decoder_vjp(sd_dir):
    prior = LatentPrior(str(sd_dir))
    img = torch.rand(3, 3, 16, 16) * 2 - 1
    z = prior.encode(img)
    assert z.shape == (3, 4, 8, 8) and prior.cost.encode == 3
    with torch.no_grad():  # encoder mean x scaling factor (0.5 here)
        want = prior.vae.encode(img).latent_dist.mean * 0.5
    assert torch.allclose(z, want, atol=1e-6)
    z = z.detach().requires_grad_(True)
    back = prior.decode(z)
    assert back.shape == img.shape and prior.cost.decode == 3 and prior.cost.decode_vjp == 0
    (g,) = torch.autograd.grad(back.square().sum(), z)
    assert prior.cost.decode_vjp == 3 and torch.isfinite(g).all()


def test_class_embedding_prior(class_dir):
    prior = LatentPrior(str(class_dir), name="digits_latent", guidance_scale=2.0)
    assert prior.describe()["conditioning"] == "class" and prior.text_encoder is None
    c = prior.embed(["3", "7"])
    table = prior.class_embeddings
    assert torch.equal(c.cond, table[[3, 7]]) and torch.equal(c.uncond, table[[10]])
    assert torch.equal(prior.embed([""]).cond, table[[10]])
    x = DDIM(steps=2).solve(prior, None, torch.zeros(2, 3, 16, 16), generators(range(2), "c"), cond=c)
    assert x.shape == (2, 3, 16, 16) and prior.cost.nfe == 2 * 2 * 2
    with pytest.raises(ConfigError, match="not one of the 10 classes"):
        prior.embed(["12"])


def test_half_dtype_and_layout_errors(class_dir, tmp_path):
    prior = LatentPrior(str(class_dir), dtype="bfloat16")
    assert next(prior.unet.parameters()).dtype == torch.bfloat16
    eps = prior.eps(torch.randn(2, 4, 8, 8), 500, prior.embed(["1"]))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
    vae, unet, sched = tiny_parts()
    save_parts(tmp_path, vae, unet, sched)
    with pytest.raises(ConfigError, match="text_encoder/config.json"):
        LatentPrior(str(tmp_path))
    with pytest.raises(ConfigError, match="guidance_scale"):
        LatentPrior(str(class_dir), guidance_scale=-1)
