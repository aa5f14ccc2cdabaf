"""Latent diffusion as a Prior: Stable Diffusion 1.x/2.x-base layout, the project's latent digits prior, or an
unconditional VQ latent diffusion model (CompVis LDM, e.g. LDM-FFHQ-256 / ldm-celebahq-256).

Directory (local or hub id), diffusers layout, Stable Diffusion (StableDiffusionPipeline):
    vae/            AutoencoderKL                 image <-> latent, latent = scaling_factor · E[q(z|x)]
    unet/           UNet2DConditionModel          ε or v on latents, cross-attending to the condition
    scheduler/      scheduler_config.json         ᾱ and the prediction type
    text_encoder/ + tokenizer/                    CLIP: prompt -> encoder hidden states
 or class_embedding/embeddings.safetensors      tensor `embeddings` [n_classes + 1, seq, dim]: row k is
                                                class "k", the last row the null (unconditional) condition
VQ latent diffusion (diffusers' LDMPipeline layout, chosen when vqvae/ is present):
    vqvae/          VQModel                       image -> latent h = quant_conv(encoder(x)) (not quantized);
                                                latent -> image through the codebook (below)
    unet/           UNet2DModel                   unconditional ε on latents
    scheduler/      scheduler_config.json         ᾱ (LDM's "linear" is diffusers' scaled_linear)
The VQ latents are used unscaled (scale 1): LDMPipeline decodes the UNet's latents as they are, and the
CompVis LDM configs (ffhq-ldm-vq-4.yaml) leave scale_factor at 1.0; VQModel's own `scaling_factor` config
default (0.18215) is never read. Decoding quantizes (`quantize: true`, the official choice): the LDM code's
decode_first_stage and differentiable_decode_first_stage call VQModelInterface.decode with
force_not_quantize=False, as ReSample (soominkwon/resample @ 3e332b2) and LDMPipeline do; gradients pass the
codebook look-up straight through (z + sg(z_q − z)), in both codes. `quantize: false` decodes h directly
(force_not_quantize=True). The model is unconditional: `embed` gives no condition and CFG is refused.

Classifier-free guidance (Ho & Salimans 2022): ε̂ = ε̂(∅) + w (ε̂(c) − ε̂(∅)) from one batched UNet
call on 2B latents, counted as 2 NFE per sample. `embed(prompts)` returns the `Condition` a solver
passes back as `cond`: cond [n, seq, dim], uncond [1, seq, dim]; a solver may set its `scale` to
override the model's guidance scale for that call (1: the conditional branch alone, 1 NFE). Each
distinct prompt is encoded once per `embed` call, and the null prompt once per device.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models.base import Condition, Prior, counted, per_sample, prompt_list
from models.hub import fingerprint, need_file, net_dtype, resolve, schedule_from
from core.errors import ConfigError

PATTERNS = ("model_index.json", "*/config.json", "*/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "tokenizer/*", "scheduler/*", "class_embedding/*")


class LatentPrior(Prior):
    float64 = True  # VAE and UNet run in float64 (compute.dtype=float64): exactness and round-trip checks
    is_latent = True

    def __init__(self, path: str, name: str | None = None, dtype: str = "float32", guidance_scale: float = 1.0,
                 quantize: bool = True):
        from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel, VQModel

        label = f"model {name}" if name else "model"
        self.net_dtype = net_dtype(dtype, label)
        if not guidance_scale >= 0:
            raise ConfigError(f"{label}: guidance_scale must be >= 0, got {guidance_scale}; set model.guidance_scale.")
        root = resolve(str(path), label, PATTERNS)
        self.vq = (root / "vqvae").is_dir()  # diffusers' LDMPipeline layout: VQ autoencoder, unconditional UNet
        coder, Coder, Unet = ("vqvae", VQModel, UNet2DModel) if self.vq else ("vae", AutoencoderKL, UNet2DConditionModel)
        if not self.vq and not (root / "vae").is_dir():  # neither layout's autoencoder folder: name both
            need_file(root / "vae" / "config.json", label, "vae/config.json (Stable Diffusion) or vqvae/config.json "
                      "(VQ latent diffusion)")
        for sub in (coder, "unet"):
            need_file(root / sub / "config.json", label, f"{sub}/config.json")
        sched = need_file(root / "scheduler" / "scheduler_config.json", label, "scheduler/scheduler_config.json")
        classes = root / "class_embedding" / "embeddings.safetensors"
        if self.vq and guidance_scale != 1.0:
            raise ConfigError(f"{label}: the VQ latent diffusion model is unconditional, so it has no classifier-free "
                              f"guidance; set model.guidance_scale=1 (got {guidance_scale}).")
        if not classes.exists() and not self.vq:
            need_file(root / "text_encoder" / "config.json", label,
                      "text_encoder/config.json (or class_embedding/embeddings.safetensors)")
            need_file(root / "tokenizer", label, "tokenizer/")
        abar, prediction = schedule_from(sched, label)
        try:
            vae = Coder.from_pretrained(str(root / coder), torch_dtype=self.net_dtype, low_cpu_mem_usage=False)
            unet = Unet.from_pretrained(str(root / "unet"), torch_dtype=self.net_dtype, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise ConfigError(f"{label}: the {coder}/ or unet/ model in {str(root)!r} could not be loaded "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); check the directory's files "
                              f"({coder}/ must hold a {Coder.__name__}, unet/ a {Unet.__name__}).") from None
        if vae.config.latent_channels != unet.config.in_channels:
            raise ConfigError(f"{label}: {coder}/ latents have {vae.config.latent_channels} channels but the UNet takes "
                              f"{unet.config.in_channels}; {coder}/ and unet/ do not belong together.")
        side = unet.config.sample_size
        side = tuple(side) if isinstance(side, (tuple, list)) else (side, side)
        down = 2 ** (len(vae.config.block_out_channels) - 1)  # the VAE's spatial downsampling factor
        super().__init__(abar, (vae.config.in_channels, side[0] * down, side[1] * down),
                         state_shape=(unet.config.in_channels, *side), name=name or Path(str(path).rstrip("/")).name)
        self.prediction = prediction
        self.vae = vae.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.scaling = 1.0 if self.vq else float(vae.config.scaling_factor)  # VQ: unscaled (module docstring)
        self.shift = 0.0 if self.vq else float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.quantize = bool(quantize)
        self.guidance_scale = float(guidance_scale)
        self.text_encoder = self.tokenizer = None
        self._null = {}  # the null prompt's hidden states, per device (encoded once)
        if self.vq:
            self.class_embeddings = None
            self.config = {"path": str(path), "dtype": dtype, "autoencoder": "vq", "quantize": self.quantize,
                           "conditioning": "none", "weights_sha": fingerprint(root)}
            return
        if classes.exists():
            from safetensors.torch import load_file

            table = load_file(str(classes)).get("embeddings")
            if table is None or table.dim() != 3 or table.shape[-1] != unet.config.cross_attention_dim:
                raise ConfigError(f"{label}: {str(classes)!r} must hold `embeddings` [n_classes+1, seq, "
                                  f"{unet.config.cross_attention_dim}]; re-export the class embeddings.")
            self.register_buffer("class_embeddings", table.float(), persistent=False)
        else:
            from transformers import CLIPTextModel, CLIPTokenizer

            self.class_embeddings = None
            self.tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
            self.text_encoder = CLIPTextModel.from_pretrained(str(root / "text_encoder"), dtype=self.net_dtype)
            self.text_encoder.eval().requires_grad_(False)
        self.config = {"path": str(path), "dtype": dtype, "guidance_scale": self.guidance_scale,
                       "conditioning": "class" if classes.exists() else "text", "weights_sha": fingerprint(root)}

    def configure(self, compile: bool = False, channels_last: bool = False):
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if compile:
            self.unet = torch.compile(self.unet)
        return self

    # -- conditioning ------------------------------------------------------------------------------
    def _encode_text(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.text_encoder.parameters()).device
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            return self.text_encoder(ids)[0].float()

    def _class_rows(self, prompts: list[str]) -> torch.Tensor:
        n = self.class_embeddings.shape[0] - 1
        rows = []
        for p in prompts:
            if p == "":
                rows.append(n)
            elif not str(p).isdigit() or int(p) >= n:
                raise ConfigError(f"class prompt {p!r} is not one of the {n} classes '0'..'{n - 1}' (or '' for none).")
            else:
                rows.append(int(p))
        return self.class_embeddings[rows]

    def _states(self, prompts: list[str]) -> torch.Tensor:
        """Hidden states [n, seq, dim] of the prompts, each distinct prompt encoded once."""
        if self.class_embeddings is not None:
            return self._class_rows(prompts)
        distinct = list(dict.fromkeys(prompts))
        h = self._encode_text(distinct)
        if len(distinct) == len(prompts):
            return h
        where = {p: k for k, p in enumerate(distinct)}
        return h[torch.tensor([where[p] for p in prompts], device=h.device)]

    def null_states(self) -> torch.Tensor:
        """The null prompt's hidden states [1, seq, dim], encoded once per device."""
        if self.class_embeddings is not None:
            return self._class_rows([""])
        device = next(self.text_encoder.parameters()).device
        if device not in self._null:
            self._null[device] = self._encode_text([""])
        return self._null[device]

    def embed(self, prompts: list) -> Condition | None:
        """The condition of a list of prompts or class names (one per image; None or "": the null prompt); None
        for the unconditional VQ model."""
        prompts = prompt_list(prompts)
        if self.vq:
            return None
        cond = self.null_states() if all(p == "" for p in prompts) and len(prompts) == 1 else self._states(prompts)
        return Condition(cond, self.null_states())

    # -- the network -------------------------------------------------------------------------------
    def network(self, x_t, t, cond=None):
        B, dt = x_t.shape[0], self.net_dtype
        if self.vq:  # unconditional UNet2DModel
            return self.unet(x_t.to(dt), t).sample.to(x_t.dtype)
        if self._guided(cond):
            h = torch.cat([per_sample(cond.uncond, B), per_sample(cond.cond, B)])
            out = self.unet(torch.cat([x_t, x_t]).to(dt), torch.cat([t, t]),
                            encoder_hidden_states=h.to(device=x_t.device, dtype=dt)).sample
            uncond, c = out.to(torch.promote_types(x_t.dtype, torch.float32)).chunk(2)  # combined in ≥ float32
            out = uncond + self.cfg_scale(cond) * (c - uncond)
        else:
            h = self.null_states() if cond is None else cond.cond
            h = per_sample(h, B).to(device=x_t.device, dtype=dt)
            out = self.unet(x_t.to(dt), t, encoder_hidden_states=h).sample
        return out.to(x_t.dtype)

    # -- the autoencoder, counted ------------------------------------------------------------------
    def encode(self, image):
        """Latent of an image in [-1,1]: the encoder mean (no sampling), scaled as the UNet was trained; VQ: the
        encoder's unquantized output h, as the LDM code's encode_first_stage."""
        self.cost.encode += image.shape[0]
        out = self.vae.encode(image.to(self.net_dtype))
        mean = out.latents if self.vq else out.latent_dist.mean
        return counted(((mean.float() - self.shift) * self.scaling).to(image.dtype), self.cost, "encode_vjp")

    def decode(self, state):
        self.cost.decode += state.shape[0]
        z = (state / self.scaling + self.shift).to(self.net_dtype)
        image = (self.vae.decode(z, force_not_quantize=not self.quantize) if self.vq else self.vae.decode(z)).sample
        return counted(image.to(state.dtype), self.cost, "decode_vjp")
