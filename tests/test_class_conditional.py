"""Class-conditional pixel priors (diffusers UNet2DModel with num_class_embeds, as converted ImageNet ADM):
the typed condition carries class labels from the dataset, the null class serves run.prompt=null and CFG."""
import glob
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from models.base import Condition
from models.diffusers_pixel import DiffusersPixelPrior
from core.errors import ConfigError

from core.files import REPO_ROOT as ROOT
NULL = 10  # 10 digit classes and a null class, trained-CFG style


@pytest.fixture(scope="module")
def class_unet(tmp_path_factory):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=NULL + 1)
    with torch.no_grad():  # a class embedding strong enough for labels to change ε̂
        unet.class_embedding.weight.normal_(0, 3.0)
    path = tmp_path_factory.mktemp("class_unet")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path)
    return str(path)


def test_embed_gives_labels_and_the_null_class(class_unet):
    prior = DiffusersPixelPrior(class_unet, name="cc", null_class=NULL, guidance_scale=2.0)
    c = prior.embed(["3", None, "7"])
    assert isinstance(c, Condition) and c.cond.tolist() == [3, NULL, 7] and c.uncond.tolist() == [NULL]
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([500] * 3)
    e3, e7 = prior.eps(x, t, prior.embed(["3"]).with_scale(1.0)), prior.eps(x, t, prior.embed(["7"]).with_scale(1.0))
    assert not torch.allclose(e3, e7)
    prior.cost.reset()
    guided = prior.eps(x, t, prior.embed(["3"]))  # CFG at the model's scale: 2 NFE per sample
    assert prior.cost.nfe == 6
    e_null = prior.eps(x, t, None)
    torch.testing.assert_close(guided, e_null + 2.0 * (e3 - e_null), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="not a class index"):
        prior.embed(["cat"])


def test_a_model_without_a_null_class_needs_a_label_for_every_image(class_unet):
    prior = DiffusersPixelPrior(class_unet, name="cc")
    assert prior.embed(["4"]).uncond is None
    with pytest.raises(ConfigError, match="has no null class"):
        prior.embed([None])
    with pytest.raises(ConfigError, match="needs a null class"):
        DiffusersPixelPrior(class_unet, name="cc", guidance_scale=3.0)


@pytest.mark.parametrize("prompt", ["dataset", "null"])
def test_a_class_conditional_cell_runs_from_the_command_line(class_unet, tmp_path, prompt):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "model=diffusers_pixel", f"model.path={class_unet}",
                        "+model.name=cc", f"+model.null_class={NULL}", "solver=ddim", "solver.steps=3", "task=inpaint_box",
                        "dataset.n=2", f"run.prompt={prompt}", f"run.root={tmp_path}/runs",
                        f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache", "run.progress=false"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    (images,) = glob.glob(str(tmp_path / "runs" / "*" / "images.csv"))
    df = pd.read_csv(images, keep_default_na=False)
    assert len(df) == 2 and set(df["status"]) == {"ok"}
    if prompt == "dataset":  # the digits' class labels are the prompts
        assert all(str(p).isdigit() for p in df["prompt"])
    else:
        assert set(df["prompt"]) == {""}


def test_a_class_conditional_cell_without_a_null_class_refuses_prompt_null_before_compute(class_unet, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "model=diffusers_pixel", f"model.path={class_unet}",
                        "+model.name=cc", "solver=ddim", "solver.steps=3", "dataset.n=2", "run.prompt=null",
                        f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 2 and "has no null class" in p.stderr and "Traceback" not in p.stderr
