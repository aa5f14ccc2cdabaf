"""Measurement noise models, composable with any operator. `sigma_y` is always on the [-1,1] scale."""
from __future__ import annotations

import inspect

from core.errors import ConfigError  # torch is imported where noise is drawn: the CLI reads NOISE_PARAMS first

SPACES = ("[-1,1]", "[0,1]")


class Noise:
    name = "none"
    gaussian = True  # a Gaussian likelihood (sigma_y may be 0) is what exact posteriors need
    sigma_y = 0.0

    def add(self, z, gens):
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
        from core.rng import randn

        return z + self.sigma_y * randn(gens, z.shape[1:], dtype=z.dtype, device=z.device)

    def describe(self):
        return {"noise": self.name, "sigma_y": self.sigma_y, "sigma_given": self.sigma, "sigma_space": self.space}


class PoissonNoise(Noise):
    """Photon noise: counts ~ Poisson(rate * z01) on the [0,1] scale, mapped back to [-1,1] (DPS's variant).
    The default rate 255 is DPS's lambda = 1 (its code draws Poisson(255 * lambda * z01))."""

    name = "poisson"
    gaussian = False

    def __init__(self, rate: float = 255.0):
        if not rate > 0:
            raise ConfigError(f"Poisson rate must be > 0, got {rate}; set task.noise.rate to a positive value.")
        self.rate = float(rate)
        self.sigma_y = float("nan")

    def add(self, z, gens):
        import torch

        lam = (self.rate * (z.double().cpu() + 1) / 2).clamp_min(0)
        counts = torch.stack([torch.poisson(l, generator=g) for l, g in zip(lam, gens)])
        return (counts / self.rate * 2 - 1).to(dtype=z.dtype, device=z.device)

    def describe(self):
        return {"noise": self.name, "sigma_y": self.sigma_y, "poisson_rate": self.rate}


KINDS = {"gaussian": GaussianNoise, "poisson": PoissonNoise, "none": Noise}
# The parameters each kind takes (from its constructor): a config may carry every kind's parameters
# (conf/task/*.yaml does), and `task.noise.kind=...` alone switches between them.
NOISE_PARAMS = {k: tuple(p for p in inspect.signature(c.__init__).parameters if p != "self")
                if c.__init__ is not object.__init__ else () for k, c in KINDS.items()}


def make_noise(spec) -> Noise:
    """Build a noise model from a config mapping such as {kind: gaussian, sigma: 0.05, space: "[-1,1]"};
    parameters of the other kinds are ignored, a parameter no kind takes is refused."""
    if spec is None or isinstance(spec, Noise):
        return spec or Noise()
    spec = dict(spec)
    kind = spec.pop("kind", "gaussian")
    if kind not in KINDS:
        raise ConfigError(f"unknown noise kind {kind!r}; set task.noise.kind to one of {sorted(KINDS)}.")
    unknown = sorted(set(spec) - set().union(*NOISE_PARAMS.values()))
    if unknown:
        raise ConfigError(f"task.noise.{unknown[0]} is not a noise parameter; {kind} noise takes "
                          f"{', '.join(NOISE_PARAMS[kind]) or 'none'}.")
    try:
        return KINDS[kind](**{k: v for k, v in spec.items() if k in NOISE_PARAMS[kind]})
    except TypeError as e:
        raise ConfigError(f"bad parameters for {kind} noise ({e}); see conf/task/ for an example.") from None
