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


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd")
    from tests.latent_world import save_parts, tiny_clip, tiny_parts

    save_parts(d, *tiny_parts())
    tiny_clip(d)
    return d


@pytest.fixture(scope="module")
def tiny_text_prior(sd_dir):
    """The tiny text-to-image pipeline as a LatentPrior with CFG 3 (2 NFE per guided evaluation)."""
    from models.latent import LatentPrior

    return LatentPrior(str(sd_dir), name="tiny_sd", guidance_scale=3.0)


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    from models.latent import LatentPrior
    from tests.latent_world import save_class_latent

    return LatentPrior(str(save_class_latent(tmp_path_factory.mktemp("tiny_latent"), seed=3)), name="tiny_latent")
