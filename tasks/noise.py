"""Measurement noise models, composable with any operator. `sigma_y` is always on the [-1,1] scale."""
from __future__ import annotations

import torch

from tasks.errors import ConfigError
from tasks.rng import randn

SPACES = ("[-1,1]", "[0,1]")


class Noise:
    name = "none"
    gaussian = True  # a Gaussian likelihood (sigma_y may be 0) is what exact posteriors need
    sigma_y = 0.0

    def add(self, z: torch.Tensor, gens) -> torch.Tensor:
        return z

    def describe(self) -> dict:
        return {"noise": self.name, "sigma_y": self.sigma_y}


class GaussianNoise(Noise):
    """y = A(x) + sigma_y * n; `sigma` is given on `space`, and [0,1] values are doubled (DDRM, DiffPIR)."""

    name = "gaussian"

    def __init__(self, sigma: float, space: str = "[-1,1]"):
        if space not in SPACES:
            raise ConfigError(f"noise space must be one of {SPACES}, not {space!r}; set task.noise.space accordingly.")
        if not sigma >= 0:
            raise ConfigError(f"noise sigma must be >= 0, got {sigma}; set task.noise.sigma to a non-negative value.")
        self.sigma, self.space = float(sigma), space
        self.sigma_y = self.sigma * (2.0 if space == "[0,1]" else 1.0)

    def add(self, z, gens):
        if self.sigma_y == 0:
            return z
        return z + self.sigma_y * randn(gens, z.shape[1:], dtype=z.dtype, device=z.device)

    def describe(self):
        return {"noise": self.name, "sigma_y": self.sigma_y, "sigma_given": self.sigma, "sigma_space": self.space}


class PoissonNoise(Noise):
    """Photon noise: counts ~ Poisson(rate * z01) on the [0,1] scale, mapped back to [-1,1] (DPS's variant)."""

    name = "poisson"
    gaussian = False

    def __init__(self, rate: float):
        if not rate > 0:
            raise ConfigError(f"Poisson rate must be > 0, got {rate}; set task.noise.rate to a positive value.")
        self.rate = float(rate)
        self.sigma_y = float("nan")

    def add(self, z, gens):
        lam = (self.rate * (z.double().cpu() + 1) / 2).clamp_min(0)
        counts = torch.stack([torch.poisson(l, generator=g) for l, g in zip(lam, gens)])
        return (counts / self.rate * 2 - 1).to(dtype=z.dtype, device=z.device)

    def describe(self):
        return {"noise": self.name, "sigma_y": self.sigma_y, "poisson_rate": self.rate}


def make_noise(spec) -> Noise:
    """Build a noise model from a config mapping such as {kind: gaussian, sigma: 0.05, space: "[-1,1]"}."""
    if spec is None or isinstance(spec, Noise):
        return spec or Noise()
    spec = dict(spec)
    kind = spec.pop("kind", "gaussian")
    kinds = {"gaussian": GaussianNoise, "poisson": PoissonNoise, "none": Noise}
    if kind not in kinds:
        raise ConfigError(f"unknown noise kind {kind!r}; set task.noise.kind to one of {sorted(kinds)}.")
    try:
        return kinds[kind](**spec)
    except TypeError as e:
        raise ConfigError(f"bad parameters for {kind} noise ({e}); see conf/task/ for an example.") from None
