"""The front door's structure: imports one way (cli -> validate), one check per declared key."""
import ast
import os

import pytest
from omegaconf import open_dict

from core.errors import ConfigError
from core.files import REPO_ROOT


def _imported(path) -> set:
    """Every module a file imports, at its top or inside a function."""
    tree = ast.parse(open(os.path.join(REPO_ROOT, path)).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_cli_and_validate_import_one_way():
    assert "harness.validate" in _imported("harness/cli.py")
    assert not {"harness.cli", "harness"} & _imported("harness/validate.py")


@pytest.mark.parametrize("seed", [1.5, "abc", True, None])
def test_the_identity_and_the_config_check_refuse_a_bad_seed_with_one_check(make_cfg, seed):
    """run_name/cell_config (the identity) and check_config (the front door) give the same sentence: both
    call harness.validate.declared, the rule being DECLARED["seed"]."""
    from harness.runner import cell_config
    from harness.validate import check_config

    cfg = make_cfg()
    with open_dict(cfg):
        cfg.seed = seed
    with pytest.raises(ConfigError) as front:
        check_config(cfg.copy())
    with pytest.raises(ConfigError) as identity:
        cell_config(cfg)
    assert str(front.value) == str(identity.value) and str(front.value).startswith("seed must be an integer")
