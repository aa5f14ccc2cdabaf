"""Every latent solver and every inversion/edit method runs from the harness on a tiny random Stable
Diffusion pipeline (CLIP text encoder + tokenizer, VAE, cross-attention UNet, SD's scaled-linear
schedule; all built and saved locally) over a COCO-layout folder whose captions are the prompts, with
classifier-free guidance: `python run.py model=sd15 model.path=DIR dataset=coco ...` in miniature.
Random networks say nothing about quality; these prove the text path end to end: shapes, finiteness,
rows, and costs that follow each solver's definition under CFG (2 NFE per evaluation)."""
import pandas as pd
import pytest
from tests.helpers import coco
from tests.latent_world import save_parts, tiny_clip, tiny_parts


W = 3.0  # CFG scale: every guided evaluation costs 2 NFE per sample


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_sd")
    save_parts(d, *tiny_parts(seed=7))
    tiny_clip(d)
    return d, coco(tmp_path_factory.mktemp("coco_root"))


def cell(sd, make_cfg, *over):
    from harness.runner import run_cell

    model, root = sd
    cfg = make_cfg("model=sd15", f"model.path={model}", f"model.guidance_scale={W}", "dataset=coco",
                   f"dataset.root={root}", "dataset.n=2", *over, world=None)
    return run_cell(cfg), cfg


# (overrides, NFE per sample computed from the solver's definition, UNet VJPs per sample)
SOLVERS = {
    "dps": (["task=inpaint_box", "solver=dps", "solver.steps=3"], 2 * 3, 3),
    "psld": (["task=sr4", "solver=psld", "solver.steps=3"], 2 * 3, 3),
    "stsl": (["task=sr4", "solver=stsl", "solver.steps=2", "solver.inner=2"], 2 * 2 * (2 * 2 + 1), 2 * 2 * 2),
    "graikos-mask": (["task=inpaint_box", "solver=graikos", "solver.steps=2", "solver.n_inner=2"], 2 * (1 + 2 * 2), 0),
    "graikos-decoder": (["task=sr4", "solver=graikos", "solver.steps=2", "solver.n_inner=2", "solver.cfg_scale=3.0", "solver.conditional=true"],
                        2 * 2 * (1 + 2 * 2), 0),
    "resample": (["task=inpaint_box", "solver=resample", "solver.steps=3", "solver.skip=1", "solver.travel=1",
                  "solver.pixel_iters=3", "solver.latent_iters=2"], 2 * (3 + 2), 3),  # HDC at r = 2, 1: +1 NFE each
    "p2l": (["task=sr4", "solver=p2l", "solver.steps=2", "solver.proj_every=1"], 2 * 2 * 2, 2 * 2),
    "latent_daps": (["task=sr4", "solver=latent_daps", "solver.annealing_steps=2", "solver.ode_steps=2",
                     "solver.mcmc_steps=2"], 2 * 2 * 2, 0),
    "ddim_inversion": (["task=inversion", "solver=ddim_inversion", "solver.steps=4"], 2 * 2 * 4, 0),
    "edict": (["task=inversion", "solver=edict", "solver.steps=4"], 2 * 4 * 4, 0),
    "bdia": (["task=inversion", "solver=bdia", "solver.steps=4"], 2 * (2 * 4 - 1), 0),
    "bdia-sample": (["task=sr4", "solver=bdia", "solver.mode=sample", "solver.steps=4"], 2 * 4, 0),
    "null_text": (["task=inversion", "solver=null_text", "solver.steps=3", "solver.inner=2", "solver.tol=0",
                   "solver.tol_growth=0"], 3 + 3 * (1 + 2 + 1), 3 * 2),
    "edit-bdia": (["task=edit", "task.target='a photo of a dog'", "solver=bdia", "solver.steps=4",
                   "solver.strength=0.5"], 2 * (2 * 2 - 1), 0),
    "edit-edict": (["task=edit", "task.target='a dog'", "solver=edict", "solver.steps=4"], 2 * 4 * 4, 0),
    "edit-null_text": (["task=edit", "task.target='a dog'", "solver=null_text", "solver.steps=2", "solver.inner=1",
                        "solver.tol=0", "solver.tol_growth=0"], 2 + 2 * (1 + 1 + 1) + 2 * 2, 2),
    "stsl_edit": (["task=edit_sr4", "task.target='a dog'", "solver=stsl_edit", "solver.restore.steps=2",
                   "solver.restore.inner=1", "solver.edit.steps=3"], 2 * (2 * 3 + 2 * 3 - 1), 2 * 2),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_solver_runs_on_a_tiny_text_to_image_pipeline(sd, make_cfg, tmp_path, name):
    over, nfe, vjp = SOLVERS[name]
    s, cfg = cell(sd, make_cfg, *over)
    assert s["n_ok"] == 2 and s["n_diverged"] == 0
    assert s["nfe"] == nfe and s["vjp"] == vjp
    rows = pd.read_csv(tmp_path / "runs" / s["run"] / "images.csv")
    assert rows["prompt"].tolist() == ["A living room.", "A big bear."]  # the COCO captions conditioned the prior
    assert '"conditioning": "text"' in s["model_params"] and (tmp_path / "runs" / s["run"] / "grid.png").exists()


def test_fixed_and_empty_prompts_on_the_text_prior(sd, make_cfg, tmp_path):
    s, _ = cell(sd, make_cfg, "task=sr4", "solver=psld", "solver.steps=2", "run.prompt=''")
    assert s["nfe"] == 2 * 2  # "" is still a prompt: guided (both branches are the empty prompt)
    s, _ = cell(sd, make_cfg, "task=sr4", "solver=psld", "solver.steps=2", "run.prompt=null")
    assert s["nfe"] == 2  # unconditional: one branch
