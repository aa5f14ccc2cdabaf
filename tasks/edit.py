"""The edit task: regenerate an image under a target prompt (a class name on the latent digits prior,
text on Stable Diffusion), optionally from a corrupted measurement of it (STSL's restore-then-edit).

    y = x                                 (clean edit: identity operator, no noise)
    y = A(x) + n                          (edit of a corrupted image: any degradation task's operator)

The source condition is the run's prompt (run.prompt: the image's own caption or class by default);
the target is `target`. Solvers that edit (the inversion family, restore-then-edit) read `task.target`;
every other attribute of the operator (A, Aᵀ, A⁺, SVD, mask, noise) is the degradation's, so a
restoring solver runs on this task unchanged. Scored by fidelity to the source image (PSNR/SSIM/LPIPS
against the truth) and, where a classifier is configured, by the accuracy of the target class.
"""
from __future__ import annotations

import importlib

from tasks.base import Task
from core.errors import ConfigError
from tasks.inversion import Inversion


def build_task(spec: dict, image_shape) -> Task:
    """A task from a {_target_: module.Class, **params} mapping (the degradation of an edit)."""
    spec = dict(spec)
    target = spec.pop("_target_", None)
    if not isinstance(target, str) or "." not in target:
        raise ConfigError("task.degradation needs a _target_ naming a task class (e.g. tasks.sr.AvgPoolSR).")
    module, cls = target.rsplit(".", 1)
    try:
        kind = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError):
        raise ConfigError(f"task.degradation._target_ {target!r} names no task class; e.g. tasks.sr.AvgPoolSR.") from None
    try:
        return kind(image_shape, **spec)
    except TypeError as e:
        raise ConfigError(f"task.degradation ({cls}) does not take these parameters: {e}; fix task.degradation.") from None


class Edit(Task):
    name = "edit"

    def __init__(self, image_shape, target: str = "8", degradation: dict | Task | None = None):
        super().__init__(image_shape, None)
        if target is None or str(target) == "":
            raise ConfigError("task.target must name the prompt (or class) to edit towards, e.g. task.target=8.")
        self.target = str(target)
        if isinstance(degradation, Task):
            self.inner = degradation
        else:
            self.inner = Inversion(image_shape) if degradation is None else build_task(degradation, image_shape)
        self.noise = self.inner.noise

    def __getattr__(self, name):
        # operator internals (At, pinv, svd, cached_svd, mask, measurement_shape, matrix) are the degradation's
        if name == "inner" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def linear(self) -> bool:
        return self.inner.linear

    @property
    def has_svd(self) -> bool:
        return self.inner.has_svd

    @property
    def provides(self) -> frozenset:
        return self.inner.provides | {"edit"}

    def clean(self) -> "Edit":
        """The same edit of an image already restored: identity operator, no noise."""
        return Edit(self.image_shape, self.target)

    def draw(self, ids, seed: int):
        return self.inner.draw(ids, seed)

    def bind(self, params):
        bound = super().bind(params)
        bound.inner = self.inner.bind(params)
        return bound

    def to(self, device, dtype=None):
        bound = super().to(device, dtype)
        bound.inner = self.inner.to(device, dtype)
        return bound

    def A(self, x):
        return self.inner.A(x)

    def display(self, y):
        return self.inner.display(y)

    def describe(self):
        return {"operator": "edit", "target": self.target, "degradation": self.inner.name,
                **{f"degradation_{k}": v for k, v in self.inner.describe().items()}}
