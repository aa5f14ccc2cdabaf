"""Restore, then edit — editing of corrupted images (STSL's use case; Rout et al., CVPR 2024, §5).

    x̂_r = restore(y)                          any solver of the degradation (STSL by default)
    x̂   = edit(x̂_r → target prompt)           an inversion-family editor (BDIA by default) on the
                                               restored image, source condition = the run's prompt

The paper's editor is prompt-to-prompt cross-attention control with its "cross-attention tuning"
(surrogate-loss gradient steps between the editing steps); this harness has no attention control,
so the editor here is exact inversion plus regeneration under the target (solvers/bdia.py,
edict.py, ddim_inversion.py or null_text.py), and the CAT steps are not reproduced.
Cost = the restorer's + the editor's, both counted by the prior.
"""
from __future__ import annotations

from solvers.base import Solver, at_key_path
from core.errors import ConfigError


class RestoreThenEdit(Solver):
    name = "restore_edit"
    needs = frozenset({"edit"})
    needs_because = {"edit": "solver restore_edit needs an edit task (e.g. task=edit_sr4), not task={task}."}

    def __init__(self, restore: Solver, edit: Solver):
        if not isinstance(restore, Solver) or not isinstance(edit, Solver):
            raise ConfigError("solver.restore and solver.edit must each be a solver config with a _target_ "
                              "(e.g. solvers.stsl.STSL and solvers.bdia.BDIA).")
        if "identity" not in edit.needs:
            raise ConfigError(f"solver.edit must be an inversion-family editor (bdia, edict, ddim_inversion, "
                              f"null_text), not {edit.name}.")
        self.restore, self.edit = restore, edit

    def check(self, prior, task):
        """Across objects: the restorer serves the edit task's degradation, the editor the clean image."""
        super().check(prior, task)
        for key, part, seen in (("restore", self.restore, task), ("edit", self.edit, task.clean())):
            try:
                part.check(prior, seen)
            except ConfigError as e:
                raise at_key_path(e, f"solver.{key}") from None

    def describe(self) -> dict:
        return {"restore": {"name": self.restore.name, **self.restore.describe()},
                "edit": {"name": self.edit.name, **self.edit.describe()}}

    def solve(self, prior, task, y, gens, cond=None):
        restored = self._part("restore", prior, task, y, gens, cond).detach().clamp(-1, 1)  # an image, as editors take
        return self._part("edit", prior, task.clean(), restored, gens, cond)

    def _part(self, key, prior, task, y, gens, cond):
        """One part's solve; a setting it refuses only once it runs (e.g. steps above the prior's T) is named
        at the path a user types (solver.restore.steps)."""
        try:
            return getattr(self, key).solve(prior, task, y, gens, cond)
        except ConfigError as e:
            raise at_key_path(e, f"solver.{key}") from None
