"""The shipped latent digits prior (models/weights/digits_latent/, `conf/model/digits_latent.yaml`).

Loads offline from the repository; checks the autoencoder on held-out digits and that
class-conditional DDIM samples (classifier-free guidance) are the requested digits according to the
shipped classifier. Thresholds and the measurements behind them are stated next to each check.
"""
from pathlib import Path

import pytest
import torch

from data.digits import digits_tensors
from models.digits_classifier import confidence, load_classifier
from tools.eval_digits import sample_conditional, vae_psnr
from models.latent import LatentPrior

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "digits_latent"

# The weights are committed: a checkout without them is broken, so these tests fail rather than skip.

# Measured on the shipped weights (see models/weights/README.md), one thread, CPU:
# VAE round trip (encoder mean -> decoder, clipped): mean PSNR 33.67 dB on the first 100 test digits
# (33.44 dB over all 300, worst single digit 27.1 dB); an untrained VAE of the same shape gives ~8 dB.
# The threshold, 30 dB, leaves ~3.5 dB for numerical drift and still fails any broken/mismatched VAE.
PSNR_MIN = 30.0
# Conditional DDIM-30 (η=0, CFG 2.0), classes 0/1/3/7 x 5 seeded samples: 18/20 = 0.90 classified as
# the requested class by the shipped classifier (0.87 over all ten classes x 10 samples); chance is
# 0.10. The threshold, 0.60 (12/20), has P < 1e-7 under chance and tolerates a few flipped samples.
ACC_MIN = 0.60


@pytest.fixture(scope="module")
def prior():
    torch.set_num_threads(1)
    return LatentPrior(str(WEIGHTS), name="digits_latent", guidance_scale=2.0)


def test_loads_offline_with_the_class_layout(prior, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    p = LatentPrior(str(WEIGHTS), name="digits_latent", guidance_scale=2.0)
    assert p.image_shape == (1, 16, 16) and p.state_shape == (4, 8, 8)
    assert p.describe()["conditioning"] == "class" and p.class_embeddings.shape[0] == 11
    assert p.scaling != 1.0  # 1/std of the training latents, recorded by the training run
    total = sum(f.stat().st_size for f in WEIGHTS.rglob("*") if f.is_file())
    assert total <= 10 * 2 ** 20


def test_vae_round_trip_on_held_out_digits(prior):
    x, _ = digits_tensors("test")
    psnr = vae_psnr(prior, x[:100])
    assert prior.cost.encode == prior.cost.decode == 100
    assert psnr.mean().item() > PSNR_MIN


def test_conditional_samples_are_the_requested_class(prior):
    classes, per_class, steps = (0, 1, 3, 7), 5, 30
    prior.cost.reset()
    x, want = sample_conditional(prior, classes, per_class, steps, seed=0)
    assert x.shape == (len(classes) * per_class, 1, 16, 16) and torch.isfinite(x).all()
    assert prior.cost.nfe == 2 * steps * len(x)  # CFG: one batched UNet call on 2B latents = 2 NFE
    assert prior.cost.decode == len(x) and prior.cost.vjp == 0
    _, cls = confidence(x, load_classifier())
    acc = (cls == want).float().mean().item()
    assert acc >= ACC_MIN, f"class accuracy {acc:.2f} (chance 0.1)"
