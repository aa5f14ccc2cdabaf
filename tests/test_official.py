"""Official behaviours pinned by writing the official value out independently of our implementation."""
from __future__ import annotations

import math

import pytest
import torch

from solvers.common import timesteps


def _space_timesteps(num_timesteps: int, count: int) -> set:
    """guided-diffusion respace.space_timesteps(num_timesteps, str(count)), one section, written out."""
    frac_stride = 1 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, out = 0.0, []
    for _ in range(count):
        out.append(round(cur))
        cur += frac_stride
    return set(out)


def test_adm_spacing_equals_space_timesteps_at_every_step_count():
    for n in range(1, 1001):
        ts = timesteps(1000, n, "adm")
        assert ts == sorted(_space_timesteps(1000, n), reverse=True), n
    assert 499 in timesteps(1000, 21, "adm") and 500 not in timesteps(1000, 21, "adm")


def test_diffpir_quad_grid_is_the_official_order():
    # main_ddpir_sisr.py: seq = int(sqrt(linspace(0, T², N))), seq[-1] -= 1; t_i = index of sigmas[seq[i]],
    # sigmas the noise-level table reversed, so t_i = T-1-seq[i].
    T, N = 1000, 100
    seq = [int(math.sqrt(i * T * T / (N - 1))) for i in range(N)]
    seq[-1] -= 1
    official = [T - 1 - q for q in seq]
    ts = timesteps(T, N, "quad")
    assert ts == official
    assert ts[:3] == [999, 899, 857] and ts[-2:] == [5, 0]
    assert ts[-1] - ts[-2] > -10 and ts[0] - ts[1] == 100  # dense near t = 0
