"""A TorchFunctionMode that records every tensor movement between devices.

An event is any torch call whose tensor arguments live on more than one device (a host tensor meeting a
device tensor: the copy the GPU would do), or that returns a tensor on a device none of its inputs is on
(`.to(other)`, `.cpu()`, `.cuda()`, `copy_` across devices). Factories with an explicit device are not
events; a factory that builds a host tensor is caught where that tensor meets a device one.

This machine has no GPU, so the tests run the solve on the `meta` device (shapes and dtypes, no data):
any host tensor that reaches the solve is then on a different device than the data and shows up here,
exactly as it would on CUDA. Meta tensors have no values, so `fake_generators=True` turns a draw from a
(CPU) generator into an empty tensor on the solve device: the stand-in for the per-sample device
generators the runner makes (core.rng), which `torch.Generator` cannot make for `meta`.
"""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

DRAWS = {torch.randn, torch.rand, torch.randn_like, torch.rand_like, torch.randint}


class TransferGuard(TorchFunctionMode):
    def __init__(self, device=None, fake_generators: bool = False):
        super().__init__()
        self.device, self.fake = (torch.device(device) if device is not None else None), fake_generators
        self.events: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if self.fake and func in DRAWS and kwargs.get("generator") is not None:
            kwargs.pop("generator")
            kwargs["device"] = self.device
        out = func(*args, **kwargs)
        inputs = {t.device for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        outputs = {t.device for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
        if len(inputs) > 1 or (inputs and outputs - inputs):
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            self.events.append(f"{name}: {sorted(map(str, inputs))} -> {sorted(map(str, outputs))}")
        return out
