"""The measurement-only baseline: x̂ = A⁺y (no prior at all)."""
from __future__ import annotations

import torch

from solvers.base import Solver


class PseudoInverse(Solver):
    name = "pinv"
    needs = frozenset({"linear"})

    @torch.no_grad()
    def solve(self, prior, task, y, gens, cond=None):
        return task.pinv(y)
