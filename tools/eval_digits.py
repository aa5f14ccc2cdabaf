"""Are the digits prior's samples digits? Classifier confidence of DDIM samples vs real digits and noise.

    python -m tools.eval_digits --n 256 --steps 50 --grid results/digits_samples.png
    python -m tools.eval_digits --latent --n 20 --steps 30 --grid results/digits_latent_samples.png

Prints, for unconditional DDIM samples of the shipped pixel prior, for the 300 held-out test
digits, and for pure Gaussian noise clipped to [-1, 1]: the classifier's mean max-softmax
confidence, the fraction above 0.9, and the predicted-class histogram of the samples. The shipped
classifier is a domain tool (models/digits_classifier.py), so these numbers say "digit-like to
this classifier", not a calibrated quality score.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from core.files import REPO_ROOT

ROOT = Path(REPO_ROOT)
PIXEL = ROOT / "models" / "weights" / "digits_pixel"
LATENT = ROOT / "models" / "weights" / "digits_latent"


def load_pixel_prior(path: str | Path = PIXEL):
    from models.diffusers_pixel import DiffusersPixelPrior

    return DiffusersPixelPrior(str(path), name="digits")


@torch.no_grad()
def sample(prior, n: int, steps: int = 50, seed: int = 0, batch: int = 64) -> torch.Tensor:
    """n unconditional DDIM (η=0) samples in [-1,1]-scale, one seeded generator per sample."""
    from solvers.ddim import DDIM
    from core.rng import generators

    solver, out = DDIM(steps=steps), []
    for start in range(0, n, batch):
        gens = generators(range(start, min(n, start + batch)), "digits-eval", seed)
        like = torch.zeros(len(gens), *prior.image_shape)
        out.append(solver.solve(prior, None, like, gens))
    return torch.cat(out)


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """‖μ1-μ2‖² + tr(Σ1 + Σ2 - 2 (Σ1^½ Σ2 Σ1^½)^½) between two feature sets (float64)."""
    f1, f2 = f1.double(), f2.double()
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)

    def sqrtm(a):
        w, v = torch.linalg.eigh(0.5 * (a + a.T))
        return (v * w.clamp_min(0).sqrt()) @ v.T

    r1 = sqrtm(s1)
    return float((m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * sqrtm(r1 @ s2 @ r1).trace())


def load_latent_prior(path: str | Path = LATENT, guidance_scale: float = 2.0):
    from models.latent import LatentPrior

    return LatentPrior(str(path), name="digits_latent", guidance_scale=guidance_scale)


@torch.no_grad()
def sample_conditional(prior, classes, per_class: int, steps: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """per_class class-conditional DDIM (η=0, CFG at the prior's scale) samples of each class, in class order."""
    from solvers.ddim import DDIM
    from core.rng import generators

    xs, labels = [], []
    for k in classes:
        gens = generators(range(per_class), "digits-latent-eval", seed, int(k))
        like = torch.zeros(per_class, *prior.image_shape)
        xs.append(DDIM(steps=steps).solve(prior, None, like, gens, cond=prior.embed([str(k)])))
        labels += [int(k)] * per_class
    return torch.cat(xs), torch.tensor(labels)


@torch.no_grad()
def vae_psnr(prior, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB, peak-to-peak 2) of decode(encode(x)) clipped to [-1, 1]."""
    rec = prior.decode(prior.encode(x)).clamp(-1, 1)
    return 10 * torch.log10(4.0 / (rec - x).square().flatten(1).mean(1))


def eval_latent(args):
    from data.digits import digits_tensors
    from models.digits_classifier import confidence, load_classifier

    clf = load_classifier()
    prior = load_latent_prior(args.path if args.path != str(PIXEL) else LATENT, args.guidance)
    real, _ = digits_tensors("test")
    psnr = vae_psnr(prior, real)
    prior.cost.reset()
    x, want = sample_conditional(prior, range(10), args.n, args.steps, args.seed)
    conf, cls = confidence(x, clf)
    hit = (cls == want).float()
    out = {"vae_test_psnr_db": {"mean": round(psnr.mean().item(), 2), "min": round(psnr.min().item(), 2)},
           "class_accuracy": round(hit.mean().item(), 4),
           "per_class_accuracy": [round(hit[want == k].mean().item(), 3) for k in range(10)],
           "samples": summary(conf, cls), "n_per_class": args.n, "ddim_steps": args.steps,
           "guidance_scale": prior.guidance_scale, "nfe_per_sample": prior.cost.nfe / len(x)}
    print(json.dumps(out))
    if args.grid:  # one row per class, up to 10 samples each
        import torchvision

        k = min(args.n, 10)
        img = torch.cat([x[want == c][:k] for c in range(10)])
        img = torch.nn.functional.interpolate((img.clamp(-1, 1) + 1) / 2, scale_factor=4, mode="nearest")
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(torchvision.utils.make_grid(img, nrow=k, padding=2, pad_value=0.5), args.grid)
    return out


def summary(conf: torch.Tensor, cls: torch.Tensor) -> dict:
    return {"mean_conf": round(conf.mean().item(), 4), "frac_conf_gt_0.9": round((conf > 0.9).float().mean().item(), 4),
            "class_hist": torch.bincount(cls, minlength=10).tolist()}


def main(argv=None):
    from data.digits import digits_tensors
    from models.digits_classifier import confidence, features, load_classifier
    from core.rng import generator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--path", default=str(PIXEL))
    p.add_argument("--grid", default=None, help="save the first 64 samples as an 8×8 PNG grid here")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latent", action="store_true",
                   help="the latent prior: VAE round-trip PSNR and class accuracy of --n conditional samples per class")
    p.add_argument("--guidance", type=float, default=2.0, help="--latent: classifier-free guidance scale")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.latent:
        return eval_latent(args)

    clf = load_classifier()
    prior = load_pixel_prior(args.path)
    x = sample(prior, args.n, args.steps, args.seed)
    real, _ = digits_tensors("test")
    noise = torch.randn(300, 1, 16, 16, generator=generator("digits-eval-noise", args.seed)).clamp(-1, 1)
    train, _ = digits_tensors("train")
    feats = {k: features(v, clf) for k, v in (("samples", x), ("test", real), ("noise", noise), ("train", train[:300]))}
    out = {"samples": summary(*confidence(x, clf)), "real_test": summary(*confidence(real, clf)),
           "noise": summary(*confidence(noise, clf)),
           # domain Fréchet distance in the classifier's feature space, against the 300 test digits
           "domain_fd_vs_test": {k: round(frechet_distance(feats[k], feats["test"]), 2) for k in ("samples", "train", "noise")},
           "samples_range": [round(x.min().item(), 3), round(x.max().item(), 3)],
           "n": args.n, "ddim_steps": args.steps, "nfe_per_sample": prior.cost.nfe / args.n}
    print(json.dumps(out))
    if args.grid:
        import torchvision

        img = ((x[:64].clamp(-1, 1) + 1) / 2)
        img = torch.nn.functional.interpolate(img, scale_factor=4, mode="nearest")
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        torchvision.utils.save_image(torchvision.utils.make_grid(img, nrow=8, padding=2, pad_value=0.5), args.grid)
    return out


if __name__ == "__main__":
    main()
