"""One way to do each thing: solver parameters (cfg_scale), the typed condition, needs, config defaults."""
import pytest
import torch

from harness.build import instantiate
from tasks.errors import ConfigError


def test_cfg_scale_is_a_constructor_parameter_and_nested_solvers_use_their_own(make_cfg):
    cfg = make_cfg("model=digits_latent", "solver=stsl_edit", "task=edit_sr4", "+solver.restore.cfg_scale=1.0",
                   world=None)
    solver = instantiate("solver", cfg.solver)
    assert solver.restore.cfg_scale == 1.0 and solver.edit.cfg_scale is None
    cond = {"cond": torch.zeros(1, 1, 2), "uncond": torch.zeros(1, 1, 2)}
    assert solver.restore.condition(cond)["scale"] == 1.0 and "scale" not in solver.edit.condition(cond)
    assert solver.describe()["restore"]["cfg_scale"] == 1.0 and "cfg_scale" not in solver.describe()["edit"]


def test_a_nested_solvers_error_names_the_key_path_a_user_types(make_cfg):
    cfg = make_cfg("model=digits_latent", "solver=stsl_edit", "task=edit_sr4", "+solver.restore.cfg_scale=-1",
                   world=None)
    with pytest.raises(ConfigError, match=r"solver\.restore\.cfg_scale must be"):
        instantiate("solver", cfg.solver)
