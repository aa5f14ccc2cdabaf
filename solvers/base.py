"""The solver interface: declared needs, checked before any compute, and `solve`."""
from __future__ import annotations

import re

import torch

from core.errors import ConfigError
from core.rng import randn

NEEDS_HELP = {
    "linear": "a linear task (e.g. task=inpaint_box or task=sr4)",
    "svd": "a task with an SVD (e.g. task=inpaint_box or task=sr4)",
    "gaussian_noise": "Gaussian measurement noise (task.noise.kind=gaussian)",
    "exact": "the exact Gaussian-mixture prior (model=gmm)",
    "latent": "a latent prior (e.g. Stable Diffusion)",
    "pixel": "a pixel-space prior",
    "mask": "a mask task (inpainting, e.g. task=inpaint_box)",
    "identity": "the image itself as y (task=inversion or task=edit; to edit a corrupted image use solver=restore_edit)",
}


def at_key_path(error: ConfigError, path: str) -> ConfigError:
    """The error of a nested solver, its "solver.X" keys renamed to the path a user types (solver.restore.X)."""
    return ConfigError(re.sub(r"\bsolver\.(?=[a-z_])", f"{path}.", str(error)))


def require_condition(cond, prior, solver: str):
    """Refuse an edit on a prior that takes no prompt (its `embed` gives None); return the condition."""
    if cond is None:
        raise ConfigError(f"solver {solver} on task=edit needs a conditional prior (model={prior.name} takes no "
                          "prompt); use a latent prior with text or class conditioning, e.g. model=digits_latent.")
    return cond


class Solver:
    """A training-free solver. Subclasses set `name`, `needs` and implement `solve`.

    Constructor arguments are the solver's parameters; they are recorded in every results row. `needs` (a
    property where it depends on the parameters) is the one statement of what the prior and task must
    provide; `needs_because` may give, for a parameter-dependent need, the sentence that names its fix.
    `check` adds only checks across objects that no capability expresses.
    """

    name = "solver"
    needs: frozenset = frozenset()
    edits = False  # True for editors: on task=edit they regenerate under the target prompt (checked before compute)
    needs_because: dict = {}  # need -> the sentence (with {task} and {model}) when a parameter brings it
    cfg_scale: float | None = None  # this solver's classifier-free guidance scale; None: the model's

    def set_cfg_scale(self, cfg_scale):
        """For solvers with a `cfg_scale` parameter: validate it and keep it (None: the model's scale)."""
        if cfg_scale is None:
            return
        if isinstance(cfg_scale, bool) or not (isinstance(cfg_scale, (int, float)) and cfg_scale >= 0):
            raise ConfigError(f"solver.cfg_scale must be a number >= 0 or null (the model's scale), got {cfg_scale!r}.")
        self.cfg_scale = float(cfg_scale)

    def condition(self, cond):
        """The condition this solver runs with: `cond` carrying the solver's own CFG scale, if it has one."""
        if cond is None or self.cfg_scale is None:
            return cond
        return cond.with_scale(self.cfg_scale)

    def check(self, prior, task):
        """Raise ConfigError, before any compute, if the prior and task cannot serve this solver."""
        missing = sorted(self.needs - (prior.provides | task.provides))
        for m in missing:
            if m in self.needs_because:
                raise ConfigError(self.needs_because[m].format(task=task.name, model=prior.name))
        if missing:
            want = "; ".join(NEEDS_HELP.get(m, m) for m in missing)
            raise ConfigError(f"solver {self.name} needs {want}, which task={task.name} with model={prior.name} "
                              "does not provide; choose another task, model or solver.")
        if self.edits and "edit" in task.provides:  # an editor regenerates under task.target: the prior must take it
            require_condition(prior.embed([task.target]), prior, self.name)

    def solve(self, prior, task, y: torch.Tensor, gens, cond=None) -> torch.Tensor:
        """x̂ in image space, [-1,1]-scaled (not clipped); gens holds one generator per sample."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    @staticmethod
    def initial_noise(prior, gens, like: torch.Tensor) -> torch.Tensor:
        return randn(gens, prior.state_shape, dtype=like.dtype, device=like.device)
