"""Explicit, per-sample randomness: the bottom of the import graph (tasks, models, solvers use it).

Every random draw in the project comes from a CPU `torch.Generator` seeded from a tuple such as
(run seed, image id, purpose). Draws are made on the CPU and moved to the target device, so the
same seed gives the same numbers bit for bit on any machine, and one sample's draws never depend
on which other samples share its batch.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch


def seed_for(*parts) -> int:
    """A 63-bit seed from any tuple of printable parts (stable across processes and machines)."""
    digest = hashlib.sha256(repr(tuple(str(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed_for(*parts))


def generators(ids: Sequence, *parts) -> list[torch.Generator]:
    """One generator per sample, seeded by (parts..., id)."""
    return [generator(*parts, i) for i in ids]


def randn(gens: Sequence[torch.Generator], shape, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A [len(gens), *shape] standard normal tensor; row i comes from gens[i] alone."""
    out = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float64) for g in gens])
    return out.to(device=device, dtype=dtype)


def rand(gens: Sequence[torch.Generator], shape, *, dtype=torch.float32, device="cpu") -> torch.Tensor:
    out = torch.stack([torch.rand(tuple(shape), generator=g, dtype=torch.float64) for g in gens])
    return out.to(device=device, dtype=dtype)


def randint(gen: torch.Generator, low: int, high: int) -> int:
    """One integer in [low, high) from a single generator."""
    return int(torch.randint(low, high, (1,), generator=gen).item())
