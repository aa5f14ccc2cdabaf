"""Explicit, per-sample randomness: the bottom of the import graph (tasks, models, solvers use it).

Every random draw in the project comes from a `torch.Generator` seeded from a tuple such as
(run seed, image id, purpose), one per sample, so one sample's draws never depend on which other
samples share its batch. Measurements use CPU generators (bit-identical on any machine); solvers
get generators on the compute device, so per-step noise is drawn where it is used (a CPU draw and
copy per sample per step would cost as much as a UNet call at 256² on a GPU).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def seed_for(*parts) -> int:
    """A 63-bit seed from any tuple of printable parts (stable across processes and machines)."""
    digest = hashlib.sha256(repr(tuple(str(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_for(*parts))


def generators(ids: Sequence, *parts, device="cpu") -> list[torch.Generator]:
    """One generator per sample, seeded by (parts..., id)."""
    return [generator(*parts, i, device=device) for i in ids]


def on_cpu(g: torch.Generator) -> torch.Generator:
    """The CPU generator with the same seed (for closed-form samplers that work on the CPU)."""
    return g if g.device.type == "cpu" else torch.Generator().manual_seed(g.initial_seed())


def randn(gens: Sequence[torch.Generator], shape, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A [len(gens), *shape] standard normal tensor; row i comes from gens[i] alone."""
    out = torch.stack([torch.randn(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in gens])
    return out.to(device=device, dtype=dtype)


def rand(gens: Sequence[torch.Generator], shape, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    out = torch.stack([torch.rand(tuple(shape), generator=g, device=g.device, dtype=dtype) for g in gens])
    return out.to(device=device, dtype=dtype)


def randint(gen: torch.Generator, low: int, high: int) -> int:
    """One integer in [low, high) from a single generator."""
    return int(torch.randint(low, high, (1,), generator=gen).item())
