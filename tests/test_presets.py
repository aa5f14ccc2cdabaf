"""Whole-experiment presets: the published protocol is composed, paths are the only thing left open, and a
stand-in run (a tiny ADM-shaped model, a folder of 256-px images) records the pinned protocol in its row."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
import torch

from harness.cli import REPO_ROOT, compose

PRESETS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(REPO_ROOT, "conf/experiment/*_*_*.yaml"))
                 if os.path.basename(p).split("_")[1] in ("ffhq", "imagenet"))


def test_every_preset_cites_its_source_and_leaves_only_paths_open():
    from harness.validate import check_paths
    from core.errors import ConfigError
    assert len(PRESETS) >= 15
    for name in PRESETS:
        text = open(os.path.join(REPO_ROOT, "conf/experiment", f"{name}.yaml")).read()
        assert "# Source:" in text and "docs/" in text, name
        cfg = compose([f"+experiment={name}"])
        for group in ("solver", "task", "dataset", "model", "metrics"):
            assert cfg.names.get(group), (name, group)
        with pytest.raises(ConfigError, match="model.path=.* and dataset.root="):
            check_paths(cfg)


def test_the_dps_preset_without_paths_is_one_sentence_and_exit_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FFHQ_ROOT",)}
    r = subprocess.run([sys.executable, "run.py", "+experiment=dps_ffhq_sr4", f"run.root={tmp_path}/runs",
                        f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "model.path" in lines[0] and "dataset.root" in lines[0], r.stderr
    assert lines[0].count(".") >= 2 and lines[0].rstrip().endswith(".")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lb.csv").exists()


def stand_in_cell(preset, model_path, images, tmp_path, *extra):
    """The composed preset on stand-in paths, writing under tmp_path, on 2 images with the stand-in LPIPS
    backbone and FID features (no weights here), on the CPU."""
    return compose([f"+experiment={preset}", f"model.path={model_path}", f"dataset.root={images}",
                    f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache",
                    "run.progress=false", "dataset.n=2", "metrics.lpips_random_backbone=true",
                    "metrics.fid_features=tests.tiny_features:features", "compute=cpu", *extra])


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A tiny random-weight ADM-shaped pipeline at 256 px (learn_sigma) and a folder of 256-px PNGs."""
    from diffusers import UNet2DModel
    from PIL import Image

    from tools.convert_adm import save_pipeline, unet_config
    root = tmp_path_factory.mktemp("standin")
    hp = dict(image_size=256, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
              attention_resolutions=(), num_head_channels=16, learn_sigma=True, use_new_attention_order=False)
    torch.manual_seed(0)
    save_pipeline(UNet2DModel(**unet_config(hp)), root / "adm")
    (root / "ffhq").mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        img = (torch.rand(256, 256, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(img).save(root / "ffhq" / f"{i:05d}.png")
    return root


def test_the_dps_preset_runs_the_pinned_protocol_on_stand_in_paths(stand_in, tmp_path):
    import pandas as pd

    from harness.runner import run_cell
    paths = [f"model.path={stand_in / 'adm'}", f"dataset.root={stand_in / 'ffhq'}", f"run.root={tmp_path}/runs",
             f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache", "run.progress=false"]
    cfg = compose(["+experiment=dps_ffhq_sr4", *paths])
    # the composed protocol: DPS SR x4 (configs/super_resolution_config.yaml, diffusion_config.yaml)
    assert (cfg.solver.steps, cfg.solver.scale, cfg.solver.eta, cfg.solver.variance) == (1000, 0.3, 1.0, "learned")
    assert (cfg.solver.spacing, cfg.solver.clip_x0, cfg.solver.form) == ("adm", True, "code")
    assert cfg.task._target_ == "tasks.sr.BicubicSR" and (cfg.task.factor, cfg.task.kernel, cfg.task.transpose) == (4, "matlab", "dps")
    assert (cfg.task.noise.sigma, cfg.task.noise.space) == (0.05, "[-1,1]")
    assert list(cfg.dataset.id_range) == [0, 1000] and cfg.names["model"] == "adm_ffhq256"
    assert list(cfg.metrics.lpips) == ["vgg"] and list(cfg.metrics.set) == ["fid", "kid"] and cfg.run.num_samples == 1
    # CPU budget: 2 steps on 2 images, random LPIPS backbone and tiny FID features (no weights here)
    cfg = stand_in_cell("dps_ffhq_sr4", stand_in / "adm", stand_in / "ffhq", tmp_path, "solver.steps=2")
    summary = run_cell(cfg)
    assert summary["n_ok"] == 2
    rows = pd.read_csv(tmp_path / "lb.csv")
    row = rows.iloc[-1].to_dict()
    import json
    sp, tp = json.loads(row["solver_params"]), json.loads(row["task_params"])
    assert (sp["steps"], sp["scale"], sp["variance"], sp["eta"]) == (2, 0.3, "learned", 1.0)  # steps overridden above
    assert row["solver"] == "dps" and row["task"] == "sr4_bicubic" and row["model"] == "adm_ffhq256"
    assert tp["transpose"].startswith("dps_nearest") and tp["downsampler"] == "bicubic_matlab" and tp["factor"] == 4 and tp["image_shape"] == [3, 256, 256]
    assert any(v == 0.05 for k, v in row.items() if "sigma" in k), row
    assert "lpips_vgg" in row and not pd.isna(row["lpips_vgg"]) and "lpips_alex" not in row


LATENT = ["psld_ffhq_inpaint_box", "stsl_ffhq_sr4", "stsl_ffhq_sr8", "graikos_imagenet_inpaint", "graikos_imagenet_sr8",
          "resample_ffhq_sr4", "latent_daps_ffhq_sr4"]


@pytest.mark.parametrize("name", sorted(LATENT))
def test_a_latent_preset_without_paths_is_one_sentence_and_exit_2(tmp_path, name):
    drop = {"FFHQ_ROOT", "IMAGENET_ROOT", "IMAGENET_IDS", "SD15_PATH", "SD14_PATH", "LDM_FFHQ_PATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    r = subprocess.run([sys.executable, "run.py", f"+experiment={name}", f"run.root={tmp_path}/runs",
                        f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache"],
                       cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "model.path" in lines[0] and "dataset.root" in lines[0], r.stderr
    assert lines[0].rstrip().endswith(".") and not (tmp_path / "runs").exists() and not (tmp_path / "lb.csv").exists()


def test_the_latent_presets_pin_their_published_protocols():
    """The official values, written out from the sources each file cites (PSLD inverse_bip.sh and
    box_inpainting_config_psld.yaml @ d734647; fast-constrained-sampling inpaint.ipynb @ dc59d71 and the paper's
    sec. 4.1; STSL: the paper's values as transcribed, no official code)."""
    c = compose(["+experiment=psld_ffhq_inpaint_box"])
    assert (c.solver.steps, c.solver.omega, c.solver.gamma, c.solver.eta) == (1000, 0.1, 0.01, 0.0)
    assert (c.task.box, c.task.margin, c.task.shared, c.task.noise.sigma) == (256, 16, False, 0.05)
    assert c.names["model"] == "sd15" and list(c.dataset.id_range) == [0, 1000] and c.run.prompt == ""
    assert list(c.metrics.lpips) == ["vgg"]
    from harness.build import instantiate
    box = instantiate("task", c.task, image_shape=(3, 512, 512))  # SD v1.5's 512 px
    assert (box.box, box.margin) == (256, 16) and box.describe()["hole_fraction"] == 0.25
    c = compose(["+experiment=graikos_imagenet_inpaint"])
    assert (c.solver.steps, c.solver.n_inner, c.solver.lr_start, c.solver.lr_end, c.solver.h) == (20, 5, 0.5, 0.1, 0.005)
    assert (c.solver.direction, c.solver.cfg_scale, c.solver.conditional) == ("mask", 1.0, False)
    assert c.names["model"] == "sd14" and c.names["dataset"] == "imagenet" and c.task.noise.kind == "none"
    c = compose(["+experiment=graikos_imagenet_sr8"])  # superres.ipynb: n_inner 10, lr 0.1 constant, Resizer 1/8
    assert (c.solver.steps, c.solver.n_inner, c.solver.lr_start, c.solver.lr_end, c.solver.h) == (20, 10, 0.1, 0.1, 0.005)
    assert (c.solver.direction, c.task.factor, c.task.kernel, c.task.noise.kind) == ("decoder", 8, "matlab", "none")
    assert c.names["model"] == "sd14" and (c.solver.cfg_scale, c.solver.conditional) == (1.0, False)
    for name, factor in (("stsl_ffhq_sr4", 4), ("stsl_ffhq_sr8", 8)):  # the paper's FFHQ-512 table is SR x8
        c = compose([f"+experiment={name}"])
        assert (c.solver.steps, c.solver.inner, c.solver.trace_weight) == (50, 5, 0.02) and c.names["model"] == "sd15"
        assert (c.task.factor, c.task.kernel, c.task.noise.sigma) == (factor, "matlab", 0.05)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """The tiny Stable-Diffusion-layout pipeline of tests/test_sd_pipeline.py (tests.latent_world's builder)."""
    from tests.latent_world import save_parts, tiny_clip, tiny_parts
    d = tmp_path_factory.mktemp("tiny_sd")
    save_parts(d, *tiny_parts(seed=7))
    tiny_clip(d)
    return d


def test_the_stsl_preset_runs_its_pinned_protocol_on_stand_in_paths(stand_in, tiny_sd, tmp_path):
    """Every pinned value, steps included, on a tiny SD-shaped pipeline (16-px images: the SR x4 operator has no
    absolute size) and a folder of 256-px PNGs; only the LPIPS/FID networks are stand-ins (no weights here)."""
    import json

    import pandas as pd

    from harness.runner import run_cell
    cfg = stand_in_cell("stsl_ffhq_sr4", tiny_sd, stand_in / "ffhq", tmp_path)
    summary = run_cell(cfg)
    assert summary["n_ok"] == 2 and summary["n_diverged"] == 0
    row = pd.read_csv(tmp_path / "lb.csv").iloc[-1].to_dict()
    sp, tp = json.loads(row["solver_params"]), json.loads(row["task_params"])
    assert (sp["steps"], sp["inner"], sp["trace_weight"], sp["lam"]) == (50, 5, 0.02, 1.0)
    assert row["solver"] == "stsl" and row["task"] == "sr4_bicubic" and row["model"] == "sd15"
    assert tp["downsampler"] == "bicubic_matlab" and tp["factor"] == 4
    assert any(v == 0.05 for k, v in row.items() if "sigma" in k), row
    assert row["nfe"] == 50 * (2 * 5 + 1)  # K = 5 inner steps of 2 NFE + the fresh DDIM evaluation, no CFG
    assert "lpips_vgg" in row and not pd.isna(row["lpips_vgg"]) and "lpips_alex" not in row


def test_the_resample_preset_pins_the_official_protocol():
    """soominkwon/resample @ 3e332b2, written out: sample_condition.py --ddim_steps 500 (ddim_use_original_steps=True
    is swallowed by posterior_sampler's **kwargs: the 500-step grid runs), super_resolution_config.yaml (Resizer x4
    on 256 px, gaussian sigma 0.01), ddim.py (scale a_t * 0.5, index % 10, splits 3, inter_timesteps 5, sigma 40*...,
    pixel AdamW lr 1e-2 x 2000, latent AdamW lr 5e-3 x 500 with the 200 window, eps 1e-3), ffhq-ldm-vq-4.yaml
    (VQ-f4 LDM, decode through the codebook)."""
    c = compose(["+experiment=resample_ffhq_sr4"])
    sv = c.solver
    assert (sv.steps, sv.dps_scale, sv.tweedie, sv.skip, sv.splits, sv.hdc_splits, sv.latent_splits) == (
        500, 0.5, "code", 10, 3, 2, 1)
    assert (sv.travel, sv.gamma, sv.pixel_iters, sv.pixel_lr, sv.latent_iters, sv.latent_lr, sv.window) == (
        5, 40.0, 2000, 0.01, 500, 0.005, 200)
    assert (sv.tol, sv.weight_decay, sv.final_opt, sv.spacing) == (1e-6, 0.01, True, "leading")
    assert c.task._target_ == "tasks.sr.BicubicSR" and (c.task.factor, c.task.kernel) == (4, "matlab")
    assert (c.task.noise.kind, c.task.noise.sigma, c.task.noise.space) == ("gaussian", 0.01, "[-1,1]")
    assert c.names["model"] == "ldm_ffhq256" and c.model._target_ == "models.latent.LatentPrior"
    assert c.model.quantize is True and c.model.guidance_scale == 1.0 and c.run.num_samples == 1
    assert c.names["dataset"] == "ffhq" and c.dataset.resize == "bicubic"  # 256-px files at 256: not resampled


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    from tests.latent_world import save_tiny_ldm
    return save_tiny_ldm(tmp_path_factory.mktemp("tiny_ldm"))


def test_the_resample_preset_runs_its_pinned_protocol_on_stand_in_paths(stand_in, tiny_ldm, tmp_path):
    """Every pinned value except the step count (reduced explicitly, 500 -> 20, for the CPU) on a tiny LDM-layout
    folder (16-px images, 3x4x4 VQ latents) and a folder of 256-px PNGs; LPIPS/FID networks are stand-ins."""
    import json

    import pandas as pd

    from harness.runner import run_cell
    cfg = stand_in_cell("resample_ffhq_sr4", tiny_ldm, stand_in / "ffhq", tmp_path, "solver.steps=20")
    summary = run_cell(cfg)
    assert summary["n_ok"] == 2 and summary["n_diverged"] == 0
    row = pd.read_csv(tmp_path / "lb.csv").iloc[-1].to_dict()
    sp, tp, mp = (json.loads(row[k]) for k in ("solver_params", "task_params", "model_params"))
    assert sp["steps"] == 20  # the one explicit override
    assert (sp["dps_scale"], sp["tweedie"], sp["skip"], sp["splits"], sp["hdc_splits"], sp["latent_splits"]) == (
        0.5, "code", 10, 3, 2, 1)
    assert (sp["travel"], sp["gamma"], sp["pixel_iters"], sp["pixel_lr"], sp["latent_iters"], sp["latent_lr"]) == (
        5, 40.0, 2000, 0.01, 500, 0.005)
    assert (sp["window"], sp["tol"], sp["weight_decay"], sp["final_opt"]) == (200, 1e-6, 0.01, True)
    assert row["solver"] == "resample" and row["task"] == "sr4_bicubic" and row["model"] == "ldm_ffhq256"
    assert (mp["autoencoder"], mp["quantize"], mp["conditioning"]) == ("vq", True, "none") and mp["weights_sha"]
    assert tp["downsampler"] == "bicubic_matlab" and tp["factor"] == 4
    assert any(v == 0.01 for k, v in row.items() if "sigma" in k), row
    # 20 grid points, L = 20 // 3 = 6: HDC only at r = 10 (r % 10 == 0, 0 < r <= 20 - 6; pixel stage as r >= 6),
    # with 5 time-travel evaluations: 20 + 5 NFE; the DPS step's 20 UNet VJPs
    assert row["nfe"] == 20 + 5 and row["vjp"] == 20
    assert "lpips_vgg" in row and not pd.isna(row["lpips_vgg"])


def test_psld_pastes_the_observed_pixels_into_its_inpainting_output(tiny_sd):
    """LituRout/PSLD @ d734647 scripts/inverse.py saves mask * image + (1 - mask) * x_sample for --inpainting:
    `output: paste` (default) is (1 - m) D(z_0) + m y, `decoded` is D(z_0); other tasks are D(z_0) either way."""
    from core.rng import generators
    from models.latent import LatentPrior
    from solvers.psld import PSLD
    from tests.helpers import measured
    from tests.latent_world import TASKS
    prior = LatentPrior(str(tiny_sd), name="sd15")
    assert PSLD().output == "paste" and compose(["+experiment=psld_ffhq_inpaint_box"]).solver.output == "paste"
    for kind in ("inpaint", "sr"):
        _, task, y = measured(None, TASKS[kind](), [0, 1])
        paste = PSLD(steps=2, output="paste").solve(prior, task, y, generators([0, 1], "s"))
        raw = PSLD(steps=2, output="decoded").solve(prior, task, y, generators([0, 1], "s"))
        if kind == "inpaint":
            m = task.mask.expand_as(raw)
            assert torch.equal(paste[m == 1], y.expand_as(raw)[m == 1])
            assert torch.equal(paste[m == 0], raw[m == 0]) and not torch.equal(paste, raw)
        else:
            assert torch.equal(paste, raw)
    from core.errors import ConfigError
    with pytest.raises(ConfigError, match="solver.output"):
        PSLD(output="glued")


def test_dataset_resize_nearest_repeats_pixels_and_the_psld_preset_uses_it(tmp_path):
    """torch's f.interpolate(img, 512) (the official PSLD loader) is nearest: each 256-px pixel becomes a 2x2 block."""
    import numpy as np
    from PIL import Image

    from core.errors import ConfigError
    from data.folder import ImageFolderDataset
    arr = (np.random.default_rng(0).random((4, 4, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "00000.png")

    class P:
        image_shape, name = (3, 8, 8), "p"

    near = ImageFolderDataset(P(), str(tmp_path), pattern="{id}.png", ids=["00000"], resize="nearest").load("00000")[0]
    expect = torch.from_numpy(arr.repeat(2, 0).repeat(2, 1)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(near, expect, atol=1e-6)
    bic = ImageFolderDataset(P(), str(tmp_path), pattern="{id}.png", ids=["00000"]).load("00000")[0]
    assert not torch.allclose(bic, expect, atol=1e-2)  # the default stays bicubic
    with pytest.raises(ConfigError, match="dataset.resize"):
        ImageFolderDataset(P(), str(tmp_path), pattern="{id}.png", ids=["00000"], resize="area")
    assert compose(["+experiment=psld_ffhq_inpaint_box"]).dataset.resize == "nearest"
    assert compose(["dataset=ffhq"]).dataset.resize == "bicubic"


def test_the_latent_daps_preset_pins_the_official_ldm_protocol_and_runs(stand_in, tiny_ldm, tmp_path):
    """DAPS @ 098df6b, written out: commands/ldm_ffhq.sh (50 x 2, num_runs 1), latent_edm_daps.yaml (10 -> 0.1, ODE
    1e-3), down_sampling.yaml `ldm` (HMC 24, lr 1.35e-4, ratio 0.023, momentum 0.86, tau 0.01, x4, sigma 0.05),
    test-ffhq.yaml (ids 0..99); then run on the tiny LDM with the annealing steps reduced explicitly (50 -> 3)."""
    import json

    import pandas as pd

    from harness.runner import run_cell
    c = compose(["+experiment=latent_daps_ffhq_sr4"])
    sv = c.solver
    assert (sv.annealing_steps, sv.ode_steps, sv.mcmc_steps, sv.lr, sv.lr_min_ratio, sv.tau) == (50, 2, 24, 1.35e-4, 0.023, 0.01)
    assert (sv.mcmc, sv.momentum, sv.grad_clamp, sv.sigma_max, sv.sigma_min, sv.ode_sigma_min) == ("hmc", 0.86, 1.0, 10.0, 0.1, 1e-3)
    assert (c.task.factor, c.task.kernel, c.task.noise.sigma) == (4, "matlab", 0.05) and c.names["model"] == "ldm_ffhq256"
    assert c.names["dataset"] == "ffhq_daps100" and list(c.dataset.id_range) == [0, 100] and c.model.quantize is True
    cfg = stand_in_cell("latent_daps_ffhq_sr4", tiny_ldm, stand_in / "ffhq", tmp_path, "solver.annealing_steps=3")
    summary = run_cell(cfg)
    assert summary["n_ok"] == 2 and summary["n_diverged"] == 0
    row = pd.read_csv(tmp_path / "lb.csv").iloc[-1].to_dict()
    sp = json.loads(row["solver_params"])
    assert (sp["annealing_steps"], sp["ode_steps"], sp["mcmc_steps"], sp["momentum"]) == (3, 2, 24, 0.86)
    assert row["solver"] == "latent_daps" and row["model"] == "ldm_ffhq256" and row["nfe"] == 3 * 2
