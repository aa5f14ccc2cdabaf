import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def prior():
    from models.gmm import digits_gmm

    return digits_gmm()


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the run.py config for these overrides, writing everything under tmp_path.

    world="gmm" (the default here) starts from `+experiment=gmm`, the exact world most tests check
    against; world=None starts from run.py's own defaults (the digits world).
    """
    from harness.cli import compose

    def make(*overrides, root=None, world="gmm"):
        root = root or tmp_path
        preset = ["+experiment=gmm"] if world == "gmm" else []
        return compose([*preset, f"run.root={root}/runs", f"run.leaderboard={root}/leaderboard.csv",
                        f"run.cache={root}/cache", "run.progress=false", *overrides])

    return make
