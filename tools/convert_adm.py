"""Convert a guided-diffusion (ADM; Dhariwal & Nichol 2021) `UNetModel` checkpoint to a diffusers pipeline.

    python -m tools.convert_adm ffhq_10m.pt weights/adm_ffhq256 --preset ffhq256
    python -m tools.convert_adm 256x256_diffusion_uncond.pt weights/adm_imagenet256 --preset imagenet256_uncond

The output directory (model_index.json, unet/, scheduler/) loads with `DiffusersPixelPrior`
(conf/model/adm_*.yaml). ADM's UNet maps onto diffusers' `UNet2DModel` one module for one module:

    ADM                                         diffusers UNet2DModel
    time_embed.{0,2}                            time_embedding.linear_{1,2}
    input_blocks.0.0                            conv_in
    input_blocks.k  (level l, ResBlock[+Attn])  down_blocks.l.resnets.j [attentions.j]
    input_blocks.k  (level l, ResBlock down)    down_blocks.l.downsamplers.0
    middle_block.{0,1,2}                        mid_block.resnets.0, attentions.0, resnets.1
    output_blocks.k (level l, Res[+Attn][+up])  up_blocks.(L-1-l).resnets.i [attentions.i] [upsamplers.0]
    out.{0,2}                                   conv_norm_out, conv_out
    ResBlock in_layers.{0,2} emb_layers.1 out_layers.{0,3} skip_connection
                                                norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut
    AttentionBlock norm, qkv (conv1d), proj_out group_norm, to_q/to_k/to_v (linear), to_out.0

ADM's "legacy" attention (use_new_attention_order=False, both standard checkpoints) lays the qkv
output channels out head by head, [q_h, k_h, v_h] for each head h; the new order is [q, k, v]
with heads inside each. Both are re-split into to_q/to_k/to_v with heads contiguous, as diffusers
reshapes them. The softmax scale (ADM: ch^-1/4 on q and k each) equals diffusers' dim_head^-1/2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from core.errors import ConfigError

# Hyperparameters of the released checkpoints. attention_resolutions are feature-map sizes, as in
# guided-diffusion's script flags (it converts them to downsampling factors image_size // res).
PRESETS = {
    # DPS (Chung et al. 2023) ffhq_10m.pt: DPS2022/diffusion-posterior-sampling configs/model_config.yaml
    # (channel_mult "" -> guided-diffusion's default (1,1,2,2,4,4) for 256 px).
    "ffhq256": dict(image_size=256, in_channels=3, num_channels=128, num_res_blocks=1,
                    channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(16,), num_head_channels=64,
                    learn_sigma=True, use_new_attention_order=False),
    # guided-diffusion README, 256x256_diffusion_uncond.pt: --attention_resolutions 32,16,8 --num_channels 256
    # --num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_scale_shift_norm True --learn_sigma True
    "imagenet256_uncond": dict(image_size=256, in_channels=3, num_channels=256, num_res_blocks=2,
                               channel_mult=(1, 1, 2, 2, 4, 4), attention_resolutions=(32, 16, 8),
                               num_head_channels=64, learn_sigma=True, use_new_attention_order=False),
}
# Both presets use resblock_updown=True, use_scale_shift_norm=True, dropout 0, GroupNorm(32), and the
# DDPM linear schedule 1e-4..0.02 over 1000 steps; these are the only ADM variants converted here.


def _attention_levels(hp: dict) -> list[bool]:
    return [hp["image_size"] // 2 ** level in hp["attention_resolutions"] for level in range(len(hp["channel_mult"]))]


def unet_config(hp: dict) -> dict:
    """The diffusers UNet2DModel arguments that reproduce the ADM network `hp` describes."""
    if hp["channel_mult"][0] != 1:
        raise ConfigError("ADM conversion needs channel_mult[0] == 1 (the time embedding is sized by num_channels).")
    attn = _attention_levels(hp)
    down = ["AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn]
    up = ["AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn)]
    c = hp["in_channels"]
    return dict(sample_size=hp["image_size"], in_channels=c, out_channels=2 * c if hp["learn_sigma"] else c,
                time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,  # ADM: [cos, sin], no shift
                down_block_types=tuple(down), up_block_types=tuple(up),
                block_out_channels=tuple(m * hp["num_channels"] for m in hp["channel_mult"]),
                layers_per_block=hp["num_res_blocks"], downsample_type="resnet", upsample_type="resnet",
                resnet_time_scale_shift="scale_shift", attention_head_dim=hp["num_head_channels"],
                norm_num_groups=32, attn_norm_num_groups=32, norm_eps=1e-5, dropout=0.0, act_fn="silu",
                mid_block_scale_factor=1, add_attention=True)


def module_map(hp: dict) -> list[tuple[str, str, str]]:
    """(ADM prefix, diffusers prefix, kind) for every module; kind in conv/linear/norm/res/attn."""
    L, n = len(hp["channel_mult"]), hp["num_res_blocks"]
    attn = _attention_levels(hp)
    out = [("time_embed.0", "time_embedding.linear_1", "linear"), ("time_embed.2", "time_embedding.linear_2", "linear"),
           ("input_blocks.0.0", "conv_in", "conv")]
    k = 1
    for level in range(L):
        for j in range(n):
            out.append((f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}", "res"))
            if attn[level]:
                out.append((f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}", "attn"))
            k += 1
        if level != L - 1:
            out.append((f"input_blocks.{k}.0", f"down_blocks.{level}.downsamplers.0", "res"))
            k += 1
    out += [("middle_block.0", "mid_block.resnets.0", "res"), ("middle_block.1", "mid_block.attentions.0", "attn"),
            ("middle_block.2", "mid_block.resnets.1", "res")]
    k = 0
    for u, level in enumerate(reversed(range(L))):
        for i in range(n + 1):
            out.append((f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{i}", "res"))
            if attn[level]:
                out.append((f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{i}", "attn"))
            if level and i == n:
                out.append((f"output_blocks.{k}.{2 if attn[level] else 1}", f"up_blocks.{u}.upsamplers.0", "res"))
            k += 1
    return out + [("out.0", "conv_norm_out", "norm"), ("out.2", "conv_out", "conv")]


RES_PARTS = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
             ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))


def convert_state_dict(sd: dict, hp: dict) -> dict:
    """ADM state dict -> UNet2DModel state dict; every ADM tensor must be used exactly once."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    used, new = set(), {}

    def take(key):
        if key not in sd:
            raise ConfigError(f"ADM checkpoint has no {key!r}; it does not match the chosen --preset.")
        if key in used:
            raise RuntimeError(f"ADM key {key} mapped twice")  # a bug in the tables, not user input
        used.add(key)
        return sd[key]

    def copy(src, dst):
        for p in ("weight", "bias"):
            new[f"{dst}.{p}"] = take(f"{src}.{p}")

    heads_of = lambda ch: ch // hp["num_head_channels"]  # noqa: E731 - ADM: num_heads = ch // num_head_channels
    for src, dst, kind in module_map(hp):
        if kind == "res":
            for a, b in RES_PARTS:
                if a == "skip_connection" and f"{src}.{a}.weight" not in sd:
                    continue  # identity skip when channels are unchanged
                copy(f"{src}.{a}", f"{dst}.{b}")
        elif kind == "attn":
            copy(f"{src}.norm", f"{dst}.group_norm")
            w, b = take(f"{src}.qkv.weight")[..., 0], take(f"{src}.qkv.bias")  # conv1d [3C, C, 1]
            C = w.shape[1]
            H, d = heads_of(C), C // heads_of(C)
            if hp.get("use_new_attention_order", False):
                w, b = w.reshape(3, H, d, C), b.reshape(3, H, d)
            else:  # legacy: per head [q, k, v]
                w, b = w.reshape(H, 3, d, C).transpose(0, 1), b.reshape(H, 3, d).transpose(0, 1)
            for i, name in enumerate(("to_q", "to_k", "to_v")):
                new[f"{dst}.{name}.weight"] = w[i].reshape(C, C).contiguous()
                new[f"{dst}.{name}.bias"] = b[i].reshape(C).contiguous()
            new[f"{dst}.to_out.0.weight"] = take(f"{src}.proj_out.weight")[..., 0].contiguous()
            new[f"{dst}.to_out.0.bias"] = take(f"{src}.proj_out.bias")
        else:
            copy(src, dst)
    left = sorted(set(sd) - used)
    if left:
        raise ConfigError(f"ADM checkpoint has {len(left)} tensors this preset does not use (first: {left[0]!r}); "
                          "it does not match the chosen --preset (class-conditional checkpoints are not supported).")
    return new


def build_unet(sd: dict, hp: dict):
    from diffusers import UNet2DModel

    unet = UNet2DModel(**unet_config(hp))
    new = convert_state_dict(sd, hp)
    expected = unet.state_dict()
    missing, extra = sorted(set(expected) - set(new)), sorted(set(new) - set(expected))
    if missing or extra:
        raise RuntimeError(f"conversion tables out of step with diffusers: missing {missing[:3]}, extra {extra[:3]}")
    bad = [k for k in expected if expected[k].shape != new[k].shape]
    if bad:
        raise ConfigError(f"ADM tensor shapes do not match the preset (first: {bad[0]} {tuple(new[bad[0]].shape)} vs "
                          f"{tuple(expected[bad[0]].shape)}); choose the right --preset.")
    unet.load_state_dict(new, strict=True)
    return unet


def save_pipeline(unet, out_dir) -> Path:
    """unet/ + scheduler/ (DDPM linear 1e-4..0.02, 1000 steps: ADM's `linear` noise schedule)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          prediction_type="epsilon", variance_type="learned_range", clip_sample=True)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(out_dir), safe_serialization=True)
    return Path(out_dir)


def convert(ckpt: str, out_dir: str, preset: str | dict) -> Path:
    """`preset` names an entry of PRESETS, or is a hyperparameter dict of the same form."""
    if not isinstance(preset, dict) and preset not in PRESETS:
        raise ConfigError(f"unknown ADM preset {preset!r}; choose one of {sorted(PRESETS)}.")
    hp = preset if isinstance(preset, dict) else PRESETS[preset]
    if not Path(ckpt).is_file():
        raise ConfigError(f"ADM checkpoint {ckpt!r} does not exist; pass the path of the downloaded .pt file.")
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    return save_pipeline(build_unet(sd, hp), out_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Convert an ADM (guided-diffusion) checkpoint to a diffusers pipeline.")
    p.add_argument("ckpt")
    p.add_argument("out_dir")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    a = p.parse_args(argv)
    try:
        out = convert(a.ckpt, a.out_dir, a.preset)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}; use model=adm_{a.preset.removesuffix('_uncond')} model.path={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
