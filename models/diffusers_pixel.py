"""A pixel-space diffusers `UNet2DModel` (DDPM, converted ADM, the project's digits prior) as a Prior.

`path` is a hub id or a local directory in either diffusers layout:
    pipeline layout   model_index.json, unet/{config.json, diffusion_pytorch_model.safetensors},
                      scheduler/scheduler_config.json
    model layout      config.json + weights at the root, with scheduler_config.json beside them
The schedule (ᾱ, float64) and the prediction type (ε or v) come from the scheduler config.

Learned variance (ADM, `learn_sigma`): the UNet has 2C output channels, the first C are ε. With
`variance='drop'` the priors' interface uses ε only (every solver here takes its own step sizes);
the raw tail of the last call is kept in `last_variance` for a learned-variance DDPM step.

Class-conditional UNets (`num_class_embeds` / `class_embed_type`, e.g. converted ImageNet ADM): prompts are
class indices ("207"; a dataset with labels gives them per image). `null_class` names the label the model was
trained to treat as "no class" (classifier-free guidance, `guidance_scale`, and run.prompt=null use it); a
model without one (ADM) needs a label for every image.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from models.base import Condition, Prior, per_sample, prompt_list
from models.hub import fingerprint, need_file, net_dtype, resolve, schedule_from
from core.errors import ConfigError

VARIANCE = ("drop",)


def find_unet(root: Path, subfolder: str | None, model: str) -> tuple[Path, Path]:
    """(UNet directory, scheduler config file) inside a resolved diffusers directory."""
    if subfolder:
        unet = need_file(root / subfolder, model, f"the UNet subfolder {subfolder!r}")
    elif (root / "unet" / "config.json").exists():
        unet = root / "unet"
    elif (root / "config.json").exists():
        unet = root
    else:
        need_file(root / "unet" / "config.json", model, "unet/config.json")
    need_file(unet / "config.json", model, "the UNet's config.json")
    if not any((unet / f).exists() for f in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")):
        need_file(unet / "diffusion_pytorch_model.safetensors", model, "the UNet weights")
    for sched in (root / "scheduler" / "scheduler_config.json", unet / "scheduler_config.json",
                  root / "scheduler_config.json"):
        if sched.exists():
            return unet, sched
    need_file(root / "scheduler" / "scheduler_config.json", model, "scheduler/scheduler_config.json")


class DiffusersPixelPrior(Prior):
    def __init__(self, path: str, subfolder: str | None = None, name: str | None = None, dtype: str = "float32",
                 variance: str = "drop", null_class: int | None = None, guidance_scale: float = 1.0):
        from diffusers import UNet2DModel

        label = self.label = f"model {name}" if name else "model"
        if variance not in VARIANCE:
            raise ConfigError(f"{label}: variance={variance!r} is not supported; use one of {VARIANCE} "
                              "(learned-variance sampling reads `last_variance` instead).")
        self.net_dtype = net_dtype(dtype, label)
        root = resolve(str(path), label)
        unet_dir, sched_file = find_unet(root, subfolder, label)
        cls = json.loads((unet_dir / "config.json").read_text()).get("_class_name", "UNet2DModel")
        if cls != "UNet2DModel":
            raise ConfigError(f"{label} holds a {cls}, not a pixel UNet2DModel; use a latent model config "
                              "(e.g. model=sd15) for text-conditioned latent UNets.")
        abar, prediction = schedule_from(sched_file, label)
        try:
            unet = UNet2DModel.from_pretrained(str(unet_dir), torch_dtype=self.net_dtype, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{label}: the UNet in {str(unet_dir)!r} could not be loaded ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); check the directory's files.") from None
        c = unet.config
        size = c.sample_size if isinstance(c.sample_size, (tuple, list)) else (c.sample_size, c.sample_size)
        if c.out_channels not in (c.in_channels, 2 * c.in_channels):
            raise ConfigError(f"{label}: UNet has {c.in_channels} input and {c.out_channels} output channels; "
                              "a prior's UNet must output C (ε or v) or 2C (ε and learned variance) channels.")
        super().__init__(abar, (c.in_channels, *size), name=name or Path(str(path).rstrip("/")).name)
        self.unet = unet.eval().requires_grad_(False)
        self.prediction = prediction
        self.class_conditional = c.num_class_embeds is not None or c.class_embed_type is not None
        self.num_classes = c.num_class_embeds
        self.last_variance = None
        self.channels_last = False
        self.config = {"path": str(path), "subfolder": subfolder, "dtype": dtype, "variance": variance,
                       "learned_variance": c.out_channels == 2 * c.in_channels, "weights_sha": fingerprint(root)}
        if null_class is not None or guidance_scale != 1.0:
            if not self.class_conditional:
                raise ConfigError(f"{self.label}: null_class and guidance_scale are for class-conditional UNets; "
                                  "this one takes no class: remove model.null_class / model.guidance_scale.")
            if null_class is not None and not self._known(null_class):
                raise ConfigError(f"{self.label}: null_class={null_class} is not a class of this UNet "
                                  f"(0..{self.num_classes - 1}); set model.null_class.")
            if not guidance_scale >= 0 or (guidance_scale != 1.0 and null_class is None):
                raise ConfigError(f"{self.label}: guidance_scale={guidance_scale} needs a null class (set "
                                  "model.null_class) and must be >= 0.")
        if self.class_conditional:
            self.config.update(null_class=null_class, guidance_scale=float(guidance_scale))
        self.null_class = None if null_class is None else int(null_class)
        self.guidance_scale = float(guidance_scale)

    def configure(self, compile: bool = False, channels_last: bool = False):
        """Compute options that must not change results beyond float rounding (conf/compute)."""
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
            self.channels_last = True
        if compile:
            self.unet = torch.compile(self.unet)
        return self

    def _known(self, k) -> bool:
        return self.num_classes is None or 0 <= int(k) < self.num_classes

    def _label(self, prompt: str) -> int:
        if prompt == "":
            if self.null_class is None:
                raise ConfigError(f"{self.label} is class-conditional and has no null class, so every image needs "
                                  "a class: use a dataset with labels (run.prompt=dataset) or run.prompt=<class "
                                  "index>, or set model.null_class if the model was trained with one.")
            return self.null_class
        if not prompt.lstrip("-").isdigit() or not self._known(prompt):
            raise ConfigError(f"{self.label}: class prompt {prompt!r} is not a class index of this UNet"
                              f"{f' (0..{self.num_classes - 1})' if self.num_classes else ''}; give class indices "
                              "as prompts (a labels file for the dataset, or run.prompt=<index>).")
        return int(prompt)

    def embed(self, prompts: list) -> Condition | None:
        """Class labels [n] for a class-conditional UNet (prompts "3", or None/"" for the null class); None
        for an unconditional one."""
        prompts = prompt_list(prompts)
        if not self.class_conditional:
            return None
        null = None if self.null_class is None else torch.tensor([self.null_class])
        return Condition(torch.tensor([self._label(p) for p in prompts], dtype=torch.long), null)

    def _unet(self, x, t, labels):
        return self.unet(x, t, class_labels=None if labels is None else labels.to(x.device)).sample

    def network(self, x_t, t, cond=None):
        x = x_t.to(self.net_dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        B = x.shape[0]
        if not self.class_conditional:
            out = self._unet(x, t, None)
        elif self._guided(cond):  # one batched call on 2B: ε̂(∅) + w (ε̂(c) − ε̂(∅))
            labels = torch.cat([per_sample(cond.uncond, B), per_sample(cond.cond, B)])
            uncond, c = self._unet(torch.cat([x, x]), torch.cat([t, t]), labels).chunk(2)
            out = uncond + self.cfg_scale(cond) * (c - uncond)
        else:
            labels = torch.tensor([self._label("")]) if cond is None else cond.cond
            out = self._unet(x, t, per_sample(labels, B))
        C = self.image_shape[0]
        if out.shape[1] == 2 * C:
            self.last_variance = out[:, C:].detach().float()  # raw ADM variance interpolation output
            out = out[:, :C]
        return out.to(x_t.dtype if x_t.is_floating_point() else torch.float32)
