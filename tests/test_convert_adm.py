"""ADM -> diffusers conversion, checked against an independent ADM forward pass written here.

`RefADM` re-implements guided-diffusion's UNetModel from its architecture description (module
names as in the released checkpoints: input_blocks / middle_block / output_blocks / time_embed / out,
ResBlock in_layers / emb_layers / out_layers / skip_connection, AttentionBlock norm / qkv / proj_out).
Its state dict plays the checkpoint; its output is what the converted diffusers UNet must reproduce.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tools.convert_adm import PRESETS, convert, convert_state_dict, unet_config
from models.diffusers_pixel import DiffusersPixelPrior
from core.errors import ConfigError

SMALL = dict(image_size=16, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
             attention_resolutions=(8,), num_head_channels=16, learn_sigma=True, use_new_attention_order=False)
SMALL3 = dict(image_size=16, in_channels=1, num_channels=32, num_res_blocks=2, channel_mult=(1, 1, 2),
              attention_resolutions=(16, 4), num_head_channels=16, learn_sigma=True, use_new_attention_order=True)


class ResBlock(nn.Module):
    def __init__(self, ch, emb, out, up=False, down=False):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * out))  # scale-shift norm: 2 x out
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == ch else nn.Conv2d(ch, out, 1)
        self.up, self.down = up, down

    def resample(self, x):
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return F.avg_pool2d(x, 2) if self.down else x

    def forward(self, x, emb):
        h = self.resample(self.in_layers[:-1](x))
        x = self.resample(x)
        h = self.in_layers[-1](h)
        scale, shift = self.emb_layers(emb)[..., None, None].chunk(2, dim=1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class AttentionBlock(nn.Module):
    def __init__(self, ch, head_channels, legacy):
        super().__init__()
        self.norm, self.qkv, self.proj_out = nn.GroupNorm(32, ch), nn.Conv1d(ch, 3 * ch, 1), nn.Conv1d(ch, ch, 1)
        self.heads, self.legacy = ch // head_channels, legacy

    def forward(self, x, emb=None):
        b, c, hh, ww = x.shape
        x = x.reshape(b, c, -1)
        qkv, H, d = self.qkv(self.norm(x)), self.heads, c // self.heads
        if self.legacy:  # per head [q, k, v]
            q, k, v = qkv.reshape(b * H, 3 * d, -1).split(d, dim=1)
        else:  # [q, k, v], heads inside each
            q, k, v = (z.reshape(b * H, d, -1) for z in qkv.chunk(3, dim=1))
        s = 1 / math.sqrt(math.sqrt(d))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        return (x + self.proj_out(a)).reshape(b, c, hh, ww)


class Step(nn.Sequential):  # TimestepEmbedSequential
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb) if isinstance(m, (ResBlock, AttentionBlock)) else m(x)
        return x


class RefADM(nn.Module):
    def __init__(self, hp):
        super().__init__()
        mc, E = hp["num_channels"], 4 * hp["num_channels"]
        attn_ds = {hp["image_size"] // r for r in hp["attention_resolutions"]}
        legacy, hc = not hp["use_new_attention_order"], hp["num_head_channels"]
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, E), nn.SiLU(), nn.Linear(E, E))
        ch = mc * hp["channel_mult"][0]
        self.input_blocks = nn.ModuleList([Step(nn.Conv2d(hp["in_channels"], ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, mult in enumerate(hp["channel_mult"]):
            for _ in range(hp["num_res_blocks"]):
                layers = [ResBlock(ch, E, mult * mc)]
                ch = mult * mc
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, hc, legacy))
                self.input_blocks.append(Step(*layers))
                chans.append(ch)
            if level != len(hp["channel_mult"]) - 1:
                self.input_blocks.append(Step(ResBlock(ch, E, ch, down=True)))
                chans.append(ch)
                ds *= 2
        self.middle_block = Step(ResBlock(ch, E, ch), AttentionBlock(ch, hc, legacy), ResBlock(ch, E, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(hp["channel_mult"]))[::-1]:
            for i in range(hp["num_res_blocks"] + 1):
                layers = [ResBlock(ch + chans.pop(), E, mc * mult)]
                ch = mc * mult
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, hc, legacy))
                if level and i == hp["num_res_blocks"]:
                    layers.append(ResBlock(ch, E, ch, up=True))
                    ds //= 2
                self.output_blocks.append(Step(*layers))
        out = hp["in_channels"] * (2 if hp["learn_sigma"] else 1)
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, out, 3, padding=1))

    def forward(self, x, t):
        half = self.mc // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(x.dtype))
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def random_ref(hp, seed=0):
    torch.manual_seed(seed)
    ref = RefADM(hp)
    with torch.no_grad():  # no zero-initialised layers: every tensor must matter in the comparison
        for name, p in ref.named_parameters():
            p.add_(0.1 * torch.randn_like(p)) if "norm" in name or name.startswith("out.0") else p.mul_(1.5)
    return ref.eval()


@pytest.mark.parametrize("hp", [SMALL, SMALL3], ids=["legacy-attn", "new-order-3-levels"])
def test_converted_unet_reproduces_the_adm_forward_pass(hp, tmp_path):
    from diffusers import UNet2DModel

    ref = random_ref(hp)
    sd = ref.state_dict()
    new = convert_state_dict(sd, hp)  # raises unless every ADM key is used exactly once
    unet = UNet2DModel(**unet_config(hp))
    target = unet.state_dict()
    assert set(new) == set(target)
    assert all(new[k].shape == target[k].shape for k in target)
    unet.load_state_dict(new, strict=True)
    unet = unet.double().eval()
    x = torch.randn(2, hp["in_channels"], 16, 16, dtype=torch.float64)
    t = torch.tensor([7, 901])
    with torch.no_grad():
        want, got = ref.double()(x, t), unet(x, t).sample
    assert got.shape == want.shape == (2, 2 * hp["in_channels"], 16, 16)
    assert (got - want).abs().max() < 1e-8 * want.abs().max(), (got - want).abs().max()


def test_cli_writes_a_pipeline_the_pixel_prior_loads(tmp_path):
    ref = random_ref(SMALL, seed=1)
    ckpt = tmp_path / "adm.pt"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, ckpt)  # DataParallel-style prefix too
    out = convert(str(ckpt), str(tmp_path / "conv"), SMALL)
    prior = DiffusersPixelPrior(str(out), name="adm_small")
    assert prior.image_shape == (3, 16, 16) and prior.describe()["learned_variance"]
    assert torch.allclose(prior.alphas_cumprod[[0, 999]].float(), torch.tensor([1 - 1e-4, 4.0358e-5]), rtol=1e-3)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        want = ref(x, t)
    assert torch.allclose(prior.eps(x, t), want[:, :3], atol=1e-4 * want.abs().max())
    assert torch.allclose(prior.last_variance, want[:, 3:], atol=1e-4 * want.abs().max())


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_the_full_size_architecture(preset):
    """The released-checkpoint layouts (built on the meta device: shapes only) convert completely."""
    from diffusers import UNet2DModel

    hp = PRESETS[preset]
    with torch.device("meta"):
        sd, unet = RefADM(hp).state_dict(), UNet2DModel(**unet_config(hp))
    new, target = convert_state_dict(sd, hp), unet.state_dict()
    assert set(new) == set(target) and all(new[k].shape == target[k].shape for k in target)
    n = sum(v.numel() for v in sd.values())
    assert n == sum(v.numel() for v in new.values())
    assert (preset, round(n / 1e6)) in {("ffhq256", 94), ("imagenet256_uncond", 553)}


def test_a_mismatched_checkpoint_is_one_sentence(tmp_path):
    sd = random_ref(SMALL).state_dict()
    sd["label_emb.weight"] = torch.zeros(10, 128)
    with pytest.raises(ConfigError, match="label_emb.weight"):
        convert_state_dict(sd, SMALL)
    with pytest.raises(ConfigError, match="has no"):
        convert_state_dict(sd, {**SMALL, "num_res_blocks": 2})
    with pytest.raises(ConfigError, match="does not exist"):
        convert(str(tmp_path / "none.pt"), str(tmp_path / "o"), "ffhq256")
