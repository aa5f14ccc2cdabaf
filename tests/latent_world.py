"""The latent test world: tiny random Stable-Diffusion-layout priors (CLIP text, or a class-embedding table),
3×16×16 images and 4×8×8 latents, and the helpers the latent-solver tests share."""
import json

import pytest
import torch

from core.errors import ConfigError
from tasks.inpaint import BoxInpainting
from core.rng import generators
from tasks.sr import AvgPoolSR
from tests.helpers import measured

DIM, SEQ = 16, 8
SIGMA = {"sigma": 0.05}
SHAPE = (3, 16, 16)


def tiny_parts(seed=0):
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=16, scaling_factor=0.5)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=DIM,
                                norm_num_groups=4, attention_head_dim=4)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # SD's schedule
    return vae, unet, sched


def save_parts(d, vae, unet, sched):
    vae.save_pretrained(d / "vae")
    unet.save_pretrained(d / "unet")
    sched.save_config(d / "scheduler")


def tiny_clip(d):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]  # printable ASCII, as words' inner and final (</w>) symbols
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{c: 2 + i for i, c in enumerate(chars)},
             **{c + "</w>": 2 + len(chars) + i for i, c in enumerate(chars)}}
    (d / "bpe").mkdir()
    (d / "bpe" / "vocab.json").write_text(json.dumps(vocab))
    (d / "bpe" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(d / "bpe" / "vocab.json"), str(d / "bpe" / "merges.txt"),
                  model_max_length=SEQ).save_pretrained(d / "tokenizer")
    torch.manual_seed(1)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=DIM, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=SEQ, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(d / "text_encoder")


def save_class_latent(d, seed):
    """A tiny latent prior conditioned on an 11-row class-embedding table (the digits-latent layout)."""
    from safetensors.torch import save_file

    save_parts(d, *tiny_parts(seed=seed))
    (d / "class_embedding").mkdir()
    save_file({"embeddings": torch.randn(11, 4, DIM, generator=torch.Generator().manual_seed(0))},
              str(d / "class_embedding" / "embeddings.safetensors"))
    return d


TASKS = {"inpaint": lambda: BoxInpainting(SHAPE, SIGMA, box=8, margin=1), "sr": lambda: AvgPoolSR(SHAPE, SIGMA, factor=4)}


def run(solver, prior, kind, n=2, cond=None):
    _, bound, y = measured(None, TASKS[kind](), list(range(n)))
    solver.check(prior, bound)
    prior.cost.reset()
    x = solver.solve(prior, bound, y, generators(range(n), "s"), cond)
    assert x.shape == (n, *SHAPE) and torch.isfinite(x).all()
    return x, {k: v / n for k, v in prior.cost.snapshot().items()}


def batch_independent(solver, prior, kind, n=3, dtype=torch.float32):
    """Sample i's output does not depend on which other samples share its batch."""
    _, bound, y = measured(None, TASKS[kind](), list(range(n)))
    bound, y = bound.to("cpu", dtype), y.to(dtype)
    full = solver.solve(prior, bound, y, generators(range(n), "b"))
    one = solver.solve(prior, bound.index([1]), y[1:2], generators([1], "b"))
    assert (full[1:2] - one).abs().max() <= 1e-5


def refuses_pixel_prior(solver, prior):
    """Pixel priors are refused by check(), before any compute."""
    task = BoxInpainting((1, 16, 16), SIGMA).bind(BoxInpainting((1, 16, 16), SIGMA).draw([0], 0))
    with pytest.raises(ConfigError, match="latent prior"):
        solver.check(prior, task)


def save_tiny_ldm(d, side=16, seed=0):
    """A tiny random VQ latent diffusion folder in diffusers' LDMPipeline layout (vqvae/ VQModel f4, unet/
    UNet2DModel, scheduler/ with LDM's betas): 3×side×side images, 3×side/4×side/4 latents."""
    from diffusers import DDIMScheduler, UNet2DModel, VQModel

    torch.manual_seed(seed)
    VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16), latent_channels=3,
            num_vq_embeddings=32, norm_num_groups=4, layers_per_block=1, sample_size=side).save_pretrained(d / "vqvae")
    UNet2DModel(sample_size=side // 4, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                norm_num_groups=4).save_pretrained(d / "unet")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195).save_config(d / "scheduler")
    return d
