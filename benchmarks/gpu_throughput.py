"""GPU throughput: images/hour and peak memory of DPS, DDRM, DAPS (pixel, ADM FFHQ-256 network) and PSLD
(latent, Stable-Diffusion-1.5-shaped UNet + VAE), by batch size, dtype, torch.compile and channels_last.

    python benchmarks/gpu_throughput.py [--batches 1,2,4,8,16,32,64] [--dtypes float32,bfloat16]
        [--compile off,on] [--channels-last off,on] [--solvers dps,ddrm,daps,psld] [--steps 10]
        [--out results/gpu_throughput.md]
    python benchmarks/gpu_throughput.py --tiny --out /tmp/t.md     # seconds on a CPU (CI)

Networks are randomly initialised from their configs (nothing is downloaded): the ADM FFHQ-256 UNet of
tools/convert_adm.py's ffhq256 preset (93.6 M parameters, the DPS/DAPS checkpoint's shape) and an SD-1.5-
shaped latent model (UNet2DConditionModel 860 M, AutoencoderKL 84 M, 512² images, 64² latents; a random
class-embedding table stands in for the text encoder: PSLD runs with the empty prompt). Weights are saved
to a temporary folder (--workdir) and loaded through the harness's own priors, so the numbers include
exactly what a run does per step. Random weights cost the same FLOPs as trained ones; the images are noise.

Each configuration runs one short warm-up solve (compilation, cuDNN autotuning) and then one timed solve
of --steps solver steps on the task sr4 (4× average pooling, σ_y = 0.05); seconds per step × the solver's
default step count (conf/solver/*.yaml: DPS 1000, DDRM 20, DAPS 200 annealing levels, PSLD 1000) gives the
projected time of a full solve, hence images/hour. The solver state is float32 when the network runs in
bfloat16 (as in the harness). A batch that runs out of memory is reported as OOM and larger ones skipped.
Writes only --out (and its temporary --workdir, removed at the end).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from harness.build import instantiate  # noqa: E402
from harness.cli import CONF_DIR  # noqa: E402
from core.rng import generators  # noqa: E402

PIXEL, LATENT = ("dps", "ddrm", "daps"), ("psld",)
STEP_KEY = {"dps": "steps", "ddrm": "steps", "daps": "annealing_steps", "psld": "steps"}
TINY_SOLVER = {"daps": {"ode_steps": 1, "langevin_steps": 2}}  # --tiny: fewer inner steps, same code paths
TINY_ADM = dict(image_size=16, in_channels=3, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                attention_resolutions=(8,), num_head_channels=16, learn_sigma=True, use_new_attention_order=False)


# -- random networks in the harness's on-disk layouts ---------------------------------------------------
def save_adm(root: Path, tiny: bool) -> Path:
    from diffusers import UNet2DModel

    from tools.convert_adm import PRESETS, save_pipeline, unet_config

    torch.manual_seed(0)
    unet = UNet2DModel(**unet_config(TINY_ADM if tiny else PRESETS["ffhq256"]))
    return save_pipeline(unet, root / "adm")


def sd_configs(tiny: bool) -> tuple[dict, dict, int]:
    """(UNet2DConditionModel kwargs, AutoencoderKL kwargs, prompt tokens) of SD 1.5, or a tiny stand-in."""
    if tiny:
        unet = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                   sample_size=16, scaling_factor=0.18215)
        return unet, vae, 4
    # runwayml/stable-diffusion-v1-5 unet/config.json and vae/config.json (the values that set the shapes)
    unet = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                attention_head_dim=8)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
               up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
    return unet, vae, 77


def save_sd(root: Path, tiny: bool) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file

    out = root / "sd"
    unet_kw, vae_kw, tokens = sd_configs(tiny)
    torch.manual_seed(0)
    UNet2DConditionModel(**unet_kw).save_pretrained(str(out / "unet"), safe_serialization=True)
    AutoencoderKL(**vae_kw).save_pretrained(str(out / "vae"), safe_serialization=True)
    (out / "class_embedding").mkdir(parents=True)
    table = torch.randn(2, tokens, unet_kw["cross_attention_dim"], generator=torch.Generator().manual_seed(0))
    save_file({"embeddings": table}, str(out / "class_embedding" / "embeddings.safetensors"))
    (out / "scheduler").mkdir()
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
         "beta_end": 0.012, "num_train_timesteps": 1000, "prediction_type": "epsilon"}))
    return out


def load_prior(kind: str, path: Path, dtype: str, compile_: bool, channels_last: bool, device):
    from models.diffusers_pixel import DiffusersPixelPrior
    from models.latent import LatentPrior

    prior = (DiffusersPixelPrior(str(path), name="adm_random", dtype=dtype) if kind == "adm"
             else LatentPrior(str(path), name="sd15_random", dtype=dtype))
    prior = prior.to(device)
    prior.configure(compile=compile_, channels_last=channels_last)
    return prior


def n_params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# -- one measurement ----------------------------------------------------------------------------------
def solver_for(name: str, steps: int, tiny: bool = False):
    cfg = OmegaConf.load(os.path.join(CONF_DIR, "solver", f"{name}.yaml"))
    default = int(cfg[STEP_KEY[name]])
    cfg[STEP_KEY[name]] = steps
    if tiny:
        cfg.update(TINY_SOLVER.get(name, {}))
    return instantiate("solver", cfg), default


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(prior, solver_name: str, batch: int, steps: int, device, tiny: bool = False) -> dict:
    task = instantiate("task", OmegaConf.load(os.path.join(CONF_DIR, "task", "sr4.yaml")), image_shape=prior.image_shape)
    ids = list(range(batch))
    x = torch.rand(batch, *prior.image_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    host = task.bind(task.draw(ids, 0))
    y = host.measure(x, generators(ids, "noise")).to(device)
    bound = host.to(device, torch.float32)
    warm, _ = solver_for(solver_name, 1, tiny)
    solver, default = solver_for(solver_name, steps, tiny)
    warm.solve(prior, bound, y, generators(ids, "warm", device=device))  # compilation, autotuning
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    solver.solve(prior, bound, y, generators(ids, "solve", device=device))
    sync(device)
    per_step = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else math.nan
    full = per_step * default
    return {"sec_per_step": per_step, "default_steps": default, "sec_per_solve": full,
            "images_per_hour": 3600 * batch / full, "peak_gib": peak}


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solvers", default="dps,ddrm,daps,psld")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--compile", default="off,on", help="off, on, or off,on")
    ap.add_argument("--channels-last", default="off,on", help="off, on, or off,on")
    ap.add_argument("--steps", type=int, default=10, help="solver steps timed per configuration")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="results/gpu_throughput.md")
    ap.add_argument("--workdir", default=None, help="where the random weights are saved (a temporary folder)")
    ap.add_argument("--tiny", action="store_true", help="tiny networks, batch 1-2, 1 step (DAPS: 1 ODE, 2 Langevin "
                    "steps), float32, no compile: seconds on a CPU, for CI; its numbers mean nothing")
    a = ap.parse_args(argv)
    if a.tiny:
        a.batches, a.dtypes, a.compile, a.channels_last, a.steps = "1,2", "float32", "off", "off", 1
    device = torch.device(a.device)
    solvers = a.solvers.split(",")
    unknown = sorted(set(solvers) - set(PIXEL + LATENT))
    if unknown:
        ap.error(f"unknown solver(s) {unknown}; choose from {list(PIXEL + LATENT)}")
    flags = lambda s: [v == "on" for v in s.split(",")]  # noqa: E731
    batches = [int(b) for b in a.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        root = Path(tmp)
        paths = {}
        if any(s in PIXEL for s in solvers):
            paths["adm"] = save_adm(root, a.tiny)
        if any(s in LATENT for s in solvers):
            paths["sd"] = save_sd(root, a.tiny)
        for kind, path in paths.items():
            names = [s for s in solvers if (s in PIXEL) == (kind == "adm")]
            for dtype in a.dtypes.split(","):
                for comp in flags(a.compile):
                    for cl in flags(a.channels_last):
                        prior = load_prior(kind, path, dtype, comp, cl, device)
                        params = n_params(prior.unet) + (n_params(prior.vae) if kind == "sd" else 0)
                        for name in names:
                            for batch in batches:
                                row = {"model": f"{kind} ({params:.1f} M)", "solver": name, "batch": batch,
                                       "dtype": dtype, "compile": comp, "channels_last": cl}
                                try:
                                    row.update(measure(prior, name, batch, a.steps, device, a.tiny))
                                except RuntimeError as e:
                                    if not is_oom(e):
                                        raise
                                    row["status"] = "OOM"
                                    rows.append(row)
                                    if device.type == "cuda":
                                        torch.cuda.empty_cache()
                                    break
                                rows.append(row)
                                print(json.dumps(row), flush=True)
                        del prior
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
    write_table(a, device, rows, argv if argv is not None else sys.argv[1:])
    return 0


def write_table(a, device, rows, argv):
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = [f"`python benchmarks/gpu_throughput.py {' '.join(argv)}`", "",
             f"Device: {name}; torch {torch.__version__}; {a.steps} timed solver steps per row, projected to the "
             "solver's default step count. Random weights (shapes of the real networks).", "",
             "| model | solver | batch | dtype | compile | channels_last | s/step | s/solve (default steps) | images/hour | peak GiB |",
             "|---|---|---:|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r.get("status") == "OOM":
            lines.append(f"| {r['model']} | {r['solver']} | {r['batch']} | {r['dtype']} | {r['compile']} | "
                         f"{r['channels_last']} | OOM | | | |")
            continue
        lines.append(f"| {r['model']} | {r['solver']} | {r['batch']} | {r['dtype']} | {r['compile']} | {r['channels_last']} "
                     f"| {r['sec_per_step']:.4f} | {r['sec_per_solve']:.1f} ({r['default_steps']}) "
                     f"| {r['images_per_hour']:.1f} | {r['peak_gib']:.2f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
