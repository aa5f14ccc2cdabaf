"""Train the shipped digits world on scikit-learn's digits (1×16×16 in [-1, 1]), CPU, one thread.

    python -m tools.train_digits pixel      --minutes 25   # DDPM UNet      -> models/weights/digits_pixel/
    python -m tools.train_digits classifier --minutes 5    # small CNN      -> models/weights/digits_classifier/
    python -m tools.train_digits latent     --minutes 15   # VAE + cond UNet -> models/weights/digits_latent/

Only the `train` split of `data.digits.split_indices()` is ever used here; the 300 `test` images
stay held out (accuracy of the classifier is reported on them). Training stops at the first of
`--steps` optimiser steps or `--minutes` of wall time; every random draw (init, batches, shifts,
noise, timesteps) comes from seeded generators, so a run with the same budget in steps is repeatable.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from data.digits import digits_tensors
from core.files import REPO_ROOT

ROOT = Path(REPO_ROOT)
WEIGHTS = ROOT / "models" / "weights"



def forward_noise(x0, abar, gen):
    """(x_t, t, ε) with t uniform in 0..999 and x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε (t drawn before ε)."""
    t = torch.randint(0, 1000, (x0.shape[0],), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps, t, eps


def warm_up(opt, lr: float, step: int, steps: int = 200) -> float:
    """Linear warm-up, then constant: the budget is wall time, so the step count is not known ahead."""
    lr = lr * min(1.0, (step + 1) / steps)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr

def log(msg: str):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def out_of_budget(args, t0: float, c0: float) -> bool:
    """Wall-clock budget (--minutes) or one-thread CPU-time budget (--cpu-minutes), whichever comes first."""
    if time.perf_counter() - t0 > 60 * args.minutes:
        return True
    return args.cpu_minutes is not None and time.process_time() - c0 > 60 * args.cpu_minutes


def random_shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by up to ±max_shift pixels in x and y, filling with background (-1)."""
    B, _, H, W = x.shape
    p = max_shift
    padded = F.pad(x, (p, p, p, p), value=-1.0)
    dx = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    dy = torch.randint(0, 2 * p + 1, (B,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def linear_scheduler_kwargs():
    return dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                prediction_type="epsilon", clip_sample=True)


# -- (a) the pixel DDPM ------------------------------------------------------------------------------
def pixel_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                       attention_head_dim=32, norm_num_groups=8)


def save_pixel(ema, out: Path, meta: dict):
    from diffusers import DDPMPipeline, DDPMScheduler

    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=ema, scheduler=DDPMScheduler(**linear_scheduler_kwargs())).save_pretrained(
        out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")


def train_pixel(args):
    x_train, _ = digits_tensors("train")
    torch.manual_seed(args.seed)  # parameter init only
    model = pixel_unet()
    prev = {}
    if args.init:  # continue from a saved pipeline (its EMA weights start both copies; Adam restarts)
        from diffusers import UNet2DModel

        model = UNet2DModel.from_pretrained(Path(args.init) / "unet")
        prev = json.loads((Path(args.init) / "training.json").read_text())
    ema = copy.deepcopy(model).requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"pixel UNet: {n_params / 1e6:.2f} M parameters, {len(x_train)} training digits")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 1 + prev.get("steps", 0))
    out = Path(args.out or WEIGHTS / "digits_pixel")
    t0, c0, step, run_loss, losses = time.perf_counter(), time.process_time(), 0, None, []
    while step < args.steps and not out_of_budget(args, t0, c0):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        x0 = random_shift(x_train[idx], gen)
        xt, t, eps = forward_noise(x0, abar, gen)
        lr = warm_up(opt, args.lr, step)
        loss = F.mse_loss(model(xt, t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema_update(ema, model, min(args.ema, (1 + step) / (10 + step)))
        run_loss = loss.item() if run_loss is None else 0.99 * run_loss + 0.01 * loss.item()
        if step % 100 == 0:
            losses.append(run_loss)
            log(f"step {step} loss(ema-avg) {run_loss:.4f} lr {lr:.2e} {time.perf_counter() - t0:.0f}s")
        if step % 2000 == 0:
            save_pixel(ema, out, {"steps": step, "loss": run_loss, "seconds": time.perf_counter() - t0})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = {"steps": step, "final_loss_running_avg": run_loss, "seconds": wall, "cpu_seconds": cpu,
            "batch": args.batch, "lr": args.lr, "ema": args.ema, "seed": args.seed, "params": n_params,
            "loss_every_100": [round(v, 5) for v in losses]}
    if prev:  # totals over the runs that made these weights
        meta["stages"] = prev.get("stages", [{k: v for k, v in prev.items() if k != "loss_every_100"}]) + [
            {k: v for k, v in meta.items() if k != "loss_every_100"}]
        meta["total_steps"] = sum(st["steps"] for st in meta["stages"])
    save_pixel(ema, out, meta)
    log(f"done: {step} steps in {wall:.0f}s, final running loss {run_loss:.4f}; saved to {out}")


# -- (b) the classifier ------------------------------------------------------------------------------
def train_classifier(args):
    from safetensors.torch import save_file

    from models.digits_classifier import DigitsClassifier

    x_train, y_train = digits_tensors("train")
    x_test, y_test = digits_tensors("test")
    torch.manual_seed(args.seed)
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed + 1)
    t0, c0, step = time.perf_counter(), time.process_time(), 0
    while step < args.steps and not out_of_budget(args, t0, c0):
        model.train()
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        x = random_shift(x_train[idx], gen)
        x = x + 0.05 * torch.randn(x.shape, generator=gen)  # tolerate slightly noisy solver outputs
        lr = args.lr * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"step {step} loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    wall = time.perf_counter() - t0
    out = Path(args.out or WEIGHTS / "digits_classifier")
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    meta = {"steps": step, "final_loss": loss.item(), "seconds": wall, "test_accuracy": acc,
            "n_test": len(y_test), "batch": args.batch, "lr": args.lr, "seed": args.seed}
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"done: {step} steps in {wall:.0f}s; held-out accuracy {acc:.4f} on {len(y_test)} test digits; saved to {out}")



# -- (c) the latent prior: tiny AutoencoderKL, then a class-conditional latent UNet --------------------
N_CLASSES, EMB_SEQ, EMB_DIM = 10, 1, 32


def latent_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
                         norm_num_groups=8, layers_per_block=1, sample_size=16, scaling_factor=1.0)


def latent_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=EMB_DIM, norm_num_groups=8, attention_head_dim=8)


def latent_scheduler_kwargs():
    return {**linear_scheduler_kwargs(), "clip_sample": False}  # latents are not bounded to [-1, 1]


def train_latent_vae(args, out: Path) -> dict:
    """Reconstruction (L1 + MSE) + 1e-6 KL on ±1 px shifted train digits; scaling_factor = 1/std(latents)."""
    x_train, _ = digits_tensors("train")
    torch.manual_seed(args.seed)
    vae = latent_vae()
    n_params = sum(p.numel() for p in vae.parameters())
    log(f"latent VAE: {n_params / 1e6:.2f} M parameters, {len(x_train)} training digits")
    lr = args.vae_lr
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 11)
    budget = argparse.Namespace(minutes=args.vae_minutes, cpu_minutes=args.vae_cpu_minutes)
    t0, c0, step, run, losses = time.perf_counter(), time.process_time(), 0, None, []
    while step < args.steps and not out_of_budget(budget, t0, c0):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        x = random_shift(x_train[idx], gen)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l_rec = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        l_kl = post.kl().mean() / x[0].numel()
        loss = l_rec + args.kl_weight * l_kl
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        run = (l_rec.item(), l_kl.item()) if run is None else (0.98 * run[0] + 0.02 * l_rec.item(),
                                                             0.98 * run[1] + 0.02 * l_kl.item())
        if step % 100 == 0:
            losses.append(round(run[0], 5))
            log(f"vae step {step} rec(avg) {run[0]:.4f} kl/dim(avg) {run[1]:.3f} {time.perf_counter() - t0:.0f}s")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    vae.eval()
    with torch.no_grad():
        mu = torch.cat([vae.encode(x_train[i:i + 256]).latent_dist.mean for i in range(0, len(x_train), 256)])
        x_test, _ = digits_tensors("test")
        rec = vae.decode(vae.encode(x_test).latent_dist.mean).sample.clamp(-1, 1)
        mse = ((rec - x_test) ** 2).flatten(1).mean(1)
        psnr = (10 * torch.log10(4.0 / mse)).mean().item()  # range [-1, 1]: peak-to-peak 2
    scaling = 1.0 / mu.std().item()
    vae.register_to_config(scaling_factor=scaling)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    meta = {"steps": step, "seconds": wall, "cpu_seconds": cpu, "final_rec_loss_running_avg": run[0],
            "final_kl_per_dim_running_avg": run[1], "kl_weight": args.kl_weight, "lr": lr, "batch": args.batch,
            "params": n_params, "latent_mean": mu.mean().item(), "latent_std": mu.std().item(),
            "scaling_factor": scaling, "test_psnr_db_mean_encoder": psnr, "rec_every_100": losses}
    (out / "vae_training.json").write_text(json.dumps(meta, indent=1) + "\n")
    log(f"vae done: {step} steps, {cpu:.0f} CPU-s / {wall:.0f} wall-s, scaling {scaling:.4f}, test PSNR {psnr:.2f} dB")
    return meta


def save_latent_unet(ema_unet, table: torch.Tensor, out: Path, meta: dict):
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    ema_unet.save_pretrained(out / "unet", safe_serialization=True)
    DDPMScheduler(**latent_scheduler_kwargs()).save_pretrained(out / "scheduler")
    (out / "class_embedding").mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": table.detach().contiguous().clone()}, str(out / "class_embedding" / "embeddings.safetensors"))
    vae_meta = json.loads((out / "vae_training.json").read_text()) if (out / "vae_training.json").exists() else {}
    (out / "training.json").write_text(json.dumps({"vae": vae_meta, "unet": meta}, indent=1) + "\n")


def train_latent_unet(args, out: Path):
    """ε-prediction on scaled VAE latents of shifted train digits, conditioned on a learned class table.

    The table [11, EMB_SEQ, EMB_DIM] is trained with the UNet (row 10 = null, drawn for
    `--label-dropout` of the batch rows: classifier-free guidance). Latents of every training digit
    at each of the 9 (±1 px) shifts are encoded once (encoder mean × scaling_factor)."""
    from diffusers import AutoencoderKL

    x_train, y_train = digits_tensors("train")
    vae = AutoencoderKL.from_pretrained(out / "vae").eval().requires_grad_(False)
    scaling = float(vae.config.scaling_factor)
    H = W = 16
    padded = F.pad(x_train, (1, 1, 1, 1), value=-1.0)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        lat = torch.stack([torch.cat([vae.encode(padded[i:i + 500, :, dy:dy + H, dx:dx + W]).latent_dist.mean
                                      for i in range(0, len(x_train), 500)])
                           for dy in range(3) for dx in range(3)]) * scaling  # [9, N, 4, 8, 8]
    log(f"encoded {lat.shape[0]}x{lat.shape[1]} latents, std {lat.std().item():.3f} "
        f"({time.process_time() - c0:.0f} CPU-s)")
    torch.manual_seed(args.seed)
    unet = latent_unet()
    table = torch.nn.Parameter(torch.randn(N_CLASSES + 1, EMB_SEQ, EMB_DIM))
    ema, ema_table = copy.deepcopy(unet).requires_grad_(False), table.detach().clone()
    n_params = sum(p.numel() for p in unet.parameters())
    log(f"latent UNet: {n_params / 1e6:.2f} M parameters")
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    opt = torch.optim.AdamW(list(unet.parameters()) + [table], lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 21)
    step, run, losses = 0, None, []
    while step < args.steps and not out_of_budget(args, t0, c0):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=gen)
        sh = torch.randint(0, 9, (args.batch,), generator=gen)
        z0 = lat[sh, idx]
        y = y_train[idx].clone()
        y[torch.rand(args.batch, generator=gen) < args.label_dropout] = N_CLASSES
        zt, t, eps = forward_noise(z0, abar, gen)
        lr = warm_up(opt, args.lr, step)
        loss = F.mse_loss(unet(zt, t, encoder_hidden_states=table[y]).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + [table], 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_update(ema, unet, decay)
        ema_table.lerp_(table.detach(), 1 - decay)
        run = loss.item() if run is None else 0.99 * run + 0.01 * loss.item()
        if step % 100 == 0:
            losses.append(round(run, 5))
            log(f"unet step {step} loss(avg) {run:.4f} lr {lr:.2e} {time.perf_counter() - t0:.0f}s "
                f"{time.process_time() - c0:.0f} CPU-s")
        if step % 500 == 0:
            save_latent_unet(ema, ema_table, out, {"steps": step, "loss": run, "partial": True})
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meta = {"steps": step, "final_loss_running_avg": run, "seconds": wall, "cpu_seconds": cpu,
            "batch": args.batch, "lr": args.lr, "ema": args.ema, "seed": args.seed, "params": n_params,
            "label_dropout": args.label_dropout, "embedding_shape": list(table.shape),
            "loss_every_100": losses}
    save_latent_unet(ema, ema_table, out, meta)
    log(f"unet done: {step} steps, {cpu:.0f} CPU-s / {wall:.0f} wall-s, final running loss {run:.4f}; saved to {out}")


def train_latent(args):
    out = Path(args.out or WEIGHTS / "digits_latent")
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ("vae", "all"):
        train_latent_vae(args, out)
    if args.part in ("unet", "all"):
        train_latent_unet(args, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["pixel", "classifier", "latent"])
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="also stop after this much CPU time (a fair budget on a shared machine)")
    p.add_argument("--init", default=None, help="pixel: continue from this saved pipeline directory")
    p.add_argument("--steps", type=int, default=10 ** 9)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    p.add_argument("--part", choices=["vae", "unet", "all"], default="all",
                   help="latent: train the VAE, the UNet (on the saved VAE's latents), or both in turn")
    p.add_argument("--vae-minutes", type=float, default=15.0, help="latent: wall budget of the VAE")
    p.add_argument("--vae-cpu-minutes", type=float, default=6.0, help="latent: CPU budget of the VAE")
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--label-dropout", type=float, default=0.1, help="latent: share of null-class rows (CFG)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "pixel":
        args.lr = args.lr or 5e-4
        train_pixel(args)
    elif args.what == "classifier":
        args.lr = args.lr or 2e-3
        train_classifier(args)
    else:
        args.lr = args.lr or 1e-3
        train_latent(args)


if __name__ == "__main__":
    main()
