"""LPIPS (Zhang et al. 2018) with the `lpips` package: VGG and AlexNet columns, inputs in [-1,1].

The package ships its linear calibration layers; the backbones are torchvision's ImageNet weights,
read from `metrics.weights_dir` (or $DIFFINV_WEIGHTS_DIR) when set, else torch hub's cache
(<torch hub dir>/checkpoints). We never download: a missing file is a ConfigError before compute.
Images are never min-max normalised. Grey images are repeated to 3 channels; images smaller than
`min_size` are bilinearly upsampled to it (AlexNet's strides need >= ~32 px), recorded in rows.
"""
from __future__ import annotations

import os
import warnings

import torch

from metrics import hub_checkpoints, weights_dir
from core.errors import ConfigError

NETS = ("vgg", "alex")
BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def checkpoint_dir(folder: str | None = None) -> str:
    return weights_dir(folder) or os.path.join(torch.hub.get_dir(), "checkpoints")


def check_nets(nets, random_backbone: bool = False, folder: str | None = None):
    """Refuse unknown backbones and, unless random (tests), missing backbone weights (no download)."""
    for net in nets:
        if net not in NETS:
            raise ConfigError(f"unknown LPIPS backbone {net!r}; metrics.lpips takes any of {list(NETS)}.")
        path = os.path.join(checkpoint_dir(folder), BACKBONE_FILES[net])
        if not random_backbone and not os.path.exists(path):
            raise ConfigError(f"LPIPS-{net} needs the torchvision backbone {BACKBONE_FILES[net]} in "
                              f"{checkpoint_dir(folder)}/ (offline: copy it there, or point metrics.weights_dir or "
                              f"$DIFFINV_WEIGHTS_DIR at the folder that holds it, or drop {net} from metrics.lpips).")


class LPIPS:
    """Per-image LPIPS for several backbones: `self(x_hat, x)` -> {'lpips_vgg': [B], ...}."""

    def __init__(self, nets=NETS, device="cpu", random_backbone: bool = False, min_size: int = 64,
                 batch_size: int = 64, seed: int = 0, folder: str | None = None):
        import lpips

        check_nets(nets, random_backbone, folder)
        folder = None if random_backbone else weights_dir(folder)
        self.device, self.min_size, self.batch_size = torch.device(device), int(min_size), int(batch_size)
        self.nets = {}
        for net in nets:
            # random backbones (plumbing tests only) are drawn from a seeded, local RNG state
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), hub_checkpoints(folder):
                warnings.simplefilter("ignore")
                torch.manual_seed(seed)
                model = lpips.LPIPS(net=net, pnet_rand=random_backbone, verbose=False)
            self.nets[net] = model.eval().requires_grad_(False).to(self.device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < self.min_size:
            s = self.min_size / min(x.shape[-2:])
            size = (round(x.shape[-2] * s), round(x.shape[-1] * s))
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {f"lpips_{n}": [] for n in self.nets}
        for s in range(0, len(x_hat), self.batch_size):
            a = self.prepare(x_hat[s: s + self.batch_size].to(self.device))
            b = self.prepare(x[s: s + self.batch_size].to(self.device))
            for n, model in self.nets.items():
                out[f"lpips_{n}"].append(model(a, b).flatten().float().cpu())
        return {k: torch.cat(v) for k, v in out.items()}
