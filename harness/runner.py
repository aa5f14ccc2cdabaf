"""The loop of one cell: batches of images, frozen measurements, solve, score, record, resume."""
from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from harness.build import Cell, build_cell
from harness.cache import MeasurementCache
from harness.grid import save_grid
from harness.loggers import check_logger, log_run
from harness.records import RunDir, atomic_write_csv, git_commit, upsert_leaderboard
from metrics import edit as editlib
from metrics import fid as fidlib
from metrics.image import psnr, ssim
from metrics.lpips import LPIPS
from metrics.posterior import posterior_metrics
from metrics.roundtrip import roundtrip_errors
from tasks.errors import ConfigError
from tasks.rng import generator

PER_SAMPLE = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "target_acc", "target_prob")
SUMMARY_STD = (*PER_SAMPLE, "psnr_best", *(f"{m}_bestpsnr" for m in PER_SAMPLE[1:]), "sw2", "mean_err")
SET_METRICS = ("fid", "kid")


def cell_config(cfg: DictConfig) -> dict:
    """What defines a cell's results (compute settings excluded: they must not change them)."""
    out = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("solver", "task", "dataset", "model")}
    out["seed"], out["num_samples"] = int(cfg.seed), int(cfg.run.num_samples)
    if cfg.metrics.get("edit_classifier"):
        out["edit_classifier"] = str(cfg.metrics.edit_classifier)
    if cfg.run.get("prompt", "dataset") != "dataset":  # only when set: earlier cells keep their names
        out["prompt"] = cfg.run.prompt
    if cfg.metrics.get("lpips"):  # per-image metrics are computed with the images: part of the cell
        out["lpips"] = [list(cfg.metrics.lpips), int(cfg.metrics.lpips_min_size), bool(cfg.metrics.lpips_random_backbone)]
    return out


def run_name(cfg: DictConfig, model: dict | None = None) -> str:
    """`model` is the built prior's description: its weights fingerprint makes retrained weights a new cell."""
    if cfg.run.get("name"):
        return str(cfg.run.name)
    key = {**cell_config(cfg), **({"weights_sha": model["weights_sha"]} if model and "weights_sha" in model else {})}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    choices = {k: _choice(cfg, k) for k in ("dataset", "task", "solver", "model")}
    return "{dataset}_{task}_{solver}_{model}".format(**choices) + f"_s{cfg.seed}_{h}"


def _choice(cfg, group) -> str:
    """The config name chosen for a group (solver=dps -> 'dps'), else the class name."""
    return str(cfg.get("names", {}).get(group) or cfg[group]["_target_"].rsplit(".", 1)[-1].lower())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _protocol(cfg: DictConfig, cell: Cell) -> dict:
    task = cell.task
    return {
        "solver": _choice(cfg, "solver"),
        "solver_params": json.dumps(cell.solver.describe(), sort_keys=True),
        "task": _choice(cfg, "task"),
        "task_params": json.dumps({**task.describe(), "image_shape": list(task.image_shape)}, sort_keys=True),
        **task.noise.describe(),
        "dataset": _choice(cfg, "dataset"),
        **{k: v for k, v in cell.dataset.describe().items() if k != "dataset"},
        "model": _choice(cfg, "model"),
        "model_params": json.dumps(cell.prior.describe(), sort_keys=True),
        "seed": int(cfg.seed),
        "num_samples": int(cfg.run.num_samples),
        "git_commit": git_commit(),
        "device": str(cell.device),
        "dtype": str(cfg.compute.dtype),
        "batch_size": int(cfg.compute.batch_size),
        "torch": torch.__version__,
    }


def run_prompts(cfg: DictConfig, captions: list) -> list:
    """Each image's prompt: its caption or class name (run.prompt=dataset), None (null: unconditional), or
    the one prompt given."""
    mode = cfg.run.get("prompt", "dataset")
    if mode == "dataset":
        return list(captions)
    return [None if mode is None else str(mode)] * len(captions)


def condition(prior, solver, prompts: list, n_samples: int):
    """The prior's condition for a batch (each prompt repeated for its samples; None if no image has one),
    carrying the solver's own CFG scale (`solver.cfg_scale`) when its config sets one."""
    if all(p is None for p in prompts):
        return None
    cond = prior.embed([p for p in prompts for _ in range(n_samples)])
    scale = getattr(solver, "cfg_scale", None)
    if cond is not None and scale is not None:
        cond = {**cond, "scale": float(scale)}
    return cond


def _exact_metrics_apply(cfg, cell) -> bool:
    mode = str(cfg.metrics.posterior).lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"metrics.posterior must be auto, true or false, not {mode!r}.")
    ok = getattr(cell.prior, "exact", False) and cell.task.linear and cell.task.noise.gaussian
    if mode == "true" and not ok:
        raise ConfigError("metrics.posterior=true needs model=gmm and a linear task with Gaussian noise; "
                          "use metrics.posterior=auto.")
    return ok and mode != "false"


class Scorer:
    """The metrics of a cell, validated (names, weight files) and loaded before any compute."""

    def __init__(self, cfg: DictConfig, cell: Cell):
        m = cfg.metrics
        self.lpips = (LPIPS(list(m.lpips), cell.device, bool(m.lpips_random_backbone), int(m.lpips_min_size))
                      if m.get("lpips") else None)
        self.set = [str(k) for k in (m.get("set") or [])]
        unknown = sorted(set(self.set) - set(SET_METRICS))
        if unknown:
            raise ConfigError(f"unknown per-set metric {', '.join(unknown)}; metrics.set takes any of {list(SET_METRICS)}.")
        if self.set:
            self.features, self.mode = str(m.fid_features), str(m.fid_mode)
            fidlib.check_features(self.features, self.mode)
            self.reference = str(m.fid_reference)
            self.reference_file = fidlib.reference_path(cfg.run.cache, self.reference)
            self.kid_args = (int(m.kid_subsets), int(m.kid_subset_size))
        self.device = cell.device
        self.edit = None
        if m.get("edit_classifier") and "edit" in cell.task.provides:  # target-class accuracy of edits
            self.edit = (editlib.load_classifier(m.edit_classifier), editlib.target_index(cell.task.target),
                         str(m.edit_classifier))

    def per_sample(self, x_hat: torch.Tensor, x: torch.Tensor) -> list[dict]:
        """Network metrics of every sample, batched: x_hat [B,N,C,H,W], x [B,C,H,W] -> per image {name: [N]}."""
        B, N = x_hat.shape[:2]
        flat = torch.nan_to_num(x_hat.flatten(0, 1))  # diverged images are marked by score_image
        vals = {}
        if self.lpips is not None:
            vals.update(self.lpips(flat, x.repeat_interleave(N, 0)))
        if self.edit is not None:
            vals.update(editlib.edit_scores(self.edit[0], flat.to(self.device), self.edit[1]))
        return [{k: v.reshape(B, N)[j].cpu() for k, v in vals.items()} for j in range(B)]

    def describe(self) -> dict:
        out = {}
        if self.lpips is not None:
            out["lpips_min_size"] = self.lpips.min_size
        if self.set:
            out.update(fid_mode=self.mode, fid_features=self.features, fid_reference=self.reference)
        if self.edit is not None:
            out["edit_classifier"] = self.edit[2]
        return out


def score_image(x_hat: torch.Tensor, x: torch.Tensor, posterior=None, image_id=None, n_ref=2048,
                per_sample: dict | None = None) -> dict:
    """Metrics of one image from its N reconstructions x_hat [N,C,H,W] and truth x [C,H,W]: the mean over
    samples, their std (`*_std_samples`), and best-of-N by PSNR (`psnr_best`; `*_bestpsnr` for the other
    metrics of that same sample). `per_sample` adds metrics computed elsewhere ({name: [N]}, e.g. LPIPS)."""
    if not torch.isfinite(x_hat).all():
        return {"status": "diverged"}
    p, s = psnr(x_hat, x.expand_as(x_hat)), ssim(x_hat, x.expand_as(x_hat))
    spread = lambda v: float(v.std()) if len(v) > 1 else 0.0  # noqa: E731 - over this image's N samples
    best = int(p.argmax())
    row = {"status": "ok", "psnr": float(p.mean()), "psnr_std_samples": spread(p), "psnr_best": float(p[best]),
           "best_sample": best, "ssim": float(s.mean()), "ssim_std_samples": spread(s), "ssim_bestpsnr": float(s[best])}
    for name, v in (per_sample or {}).items():
        v = v.float()
        row.update({name: float(v.mean()), f"{name}_std_samples": spread(v), f"{name}_bestpsnr": float(v[best])})
    if posterior is not None:
        row.update(posterior_metrics(x_hat, posterior, image_id, n_ref=n_ref))
    return row


def run_cell(cfg: DictConfig, *, after_batch=None) -> dict:
    """Run (or resume) one cell; return its summary row. `after_batch(k)` is a test hook."""
    cell = build_cell(cfg)
    exact = _exact_metrics_apply(cfg, cell)
    check_logger(cfg)
    if cfg.run.get("prompt", "dataset") not in ("dataset", None):
        cell.prior.embed([str(cfg.run.prompt)])  # a prompt the prior cannot take fails here, before any compute
    scorer = Scorer(cfg, cell)
    name = run_name(cfg, cell.prior.describe())
    rd = RunDir(cfg.run.root, name)
    with open(rd.file("config.yaml"), "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))

    seed, N = int(cfg.seed), int(cfg.run.num_samples)
    prior, task, solver, dataset = cell.prior, cell.task, cell.solver, cell.dataset
    cache = MeasurementCache(cfg.run.cache, cell_config(cfg)["task"], dataset.describe(), seed)
    protocol = {"run": name, **_protocol(cfg, cell), **scorer.describe()}
    per_batch = max(1, int(cfg.compute.batch_size) // N)

    done = rd.done_ids()
    todo = [i for i in dataset.ids if str(i) not in done]
    bar = tqdm(total=len(dataset.ids), initial=len(dataset.ids) - len(todo), desc=name, unit="img",
               disable=not cfg.run.progress)
    t_start = time.perf_counter()
    for k, start in enumerate(range(0, len(todo), per_batch)):
        ids = todo[start: start + per_batch]
        x, captions = dataset.batch(ids)
        params, y, keys = cache.measure(task, x, ids)
        bound = task.bind(params).repeat(N).to(cell.device, cell.dtype)
        y_n = y.repeat_interleave(N, 0).to(cell.device, cell.dtype)
        gens = [generator(seed, "solver", i, r, device=cell.device) for i in ids for r in range(N)]
        prompts = run_prompts(cfg, captions)
        cond = condition(prior, solver, prompts, N)

        prior.cost.reset()
        if cell.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(cell.device)
        _sync(cell.device)
        t0 = time.perf_counter()
        x_hat = solver.solve(prior, bound, y_n, gens, cond)
        _sync(cell.device)
        seconds = time.perf_counter() - t0
        n = len(ids) * N
        cost = {k2: v / n for k2, v in prior.cost.snapshot().items()}
        peak = torch.cuda.max_memory_allocated(cell.device) / 2 ** 20 if cell.device.type == "cuda" else math.nan
        roundtrip = roundtrip_errors(prior, x_hat.detach(), y_n) if task.name == "inversion" else {}

        x_hat = x_hat.detach().float().cpu().reshape(len(ids), N, *x.shape[1:])
        t1 = time.perf_counter()
        extra = scorer.per_sample(x_hat, x)
        for j in range(len(ids)):  # inversion: round-trip errors in the solver's dtype, per sample
            extra[j].update({k: v.reshape(len(ids), N)[j] for k, v in roundtrip.items()})
        rows = []
        for j, image_id in enumerate(ids):
            post = prior.posterior(task.bind(params).index([j]), y[j: j + 1]) if exact else None
            rows.append({**protocol, "image_id": str(image_id), "prompt": prompts[j], "measurement_key": keys[j],
                         **score_image(x_hat[j], x[j], post, image_id, int(cfg.metrics.n_ref), extra[j]),
                         **cost, "sec_per_sample": seconds / n, "peak_mem_mb": peak,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                         "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        for r in rows:  # time spent scoring, per sample (kept apart from the solver's sec_per_sample)
            r["metric_sec_per_sample"] = (time.perf_counter() - t1) / n
        rd.write_batch(rows, {"ids": [str(i) for i in ids], "x_hat": x_hat[:, 0].clone()})
        bar.update(len(ids))
        if after_batch is not None:
            after_batch(k)
    bar.close()
    return finish(cfg, cell, rd, protocol, cache, time.perf_counter() - t_start, scorer)


def set_metrics(cfg, cell, rd: RunDir, df: pd.DataFrame, scorer: Scorer) -> dict:
    """FID/KID of the first reconstruction of every finished, non-diverged image against the reference."""
    recon = rd.reconstructions()
    ids = [i for i in cell.dataset.ids if str(i) in recon]
    ok = set(df.loc[df["status"] == "ok", "image_id"]) if len(df) else set()
    ids = [i for i in ids if str(i) in ok and torch.isfinite(recon[str(i)]).all()]
    extract = fidlib.load_features(scorer.features, scorer.mode, scorer.device)
    if scorer.reference_file is None:  # this run's truths; their features are cached per (split, ids, extractor)
        key = {"dataset": cell.dataset.describe(), "ids": [str(i) for i in ids], "features": scorer.features,
               "mode": scorer.mode, "shape": list(cell.task.image_shape)}
        path = fidlib.stats_path(cfg.run.cache, key)
        if not os.path.exists(path):
            x, _ = cell.dataset.batch(ids)
            fidlib.save_feats(path, fidlib.batched(extract, x))
        reference = f"truths:{os.path.basename(path)[:-4]}"
    else:
        path, reference = scorer.reference_file, scorer.reference
    with np.load(path) as ref:
        ref = {k: ref[k] for k in ref.files}
    feats = fidlib.batched(extract, torch.stack([recon[str(i)] for i in ids])) if ids else None
    out = fidlib.set_metrics(feats, ref, scorer.set, *scorer.kid_args) if ids else {k: math.nan for k in scorer.set}
    return {**out, "fid_n": len(ids), "fid_ref_n": int(len(ref["feats"])) if "feats" in ref else -1,
            "fid_reference": reference}


def finish(cfg, cell, rd: RunDir, protocol: dict, cache: MeasurementCache, wall: float, scorer: Scorer = None) -> dict:
    df = rd.read_parts()
    order = {str(i): n for n, i in enumerate(cell.dataset.ids)}
    df = df.sort_values("image_id", key=lambda s: s.map(order)).reset_index(drop=True)
    atomic_write_csv(rd.file("images.csv"), df)

    ok = df[df["status"] == "ok"]
    summary = {**protocol, "n_images": len(df), "n_ok": len(ok), "n_diverged": int((df["status"] == "diverged").sum()),
               "image_ids": f"{df['image_id'].iloc[0]}..{df['image_id'].iloc[-1]}" if len(df) else ""}
    numeric = [c for c in df.columns if c not in protocol and c != "best_sample" and pd.api.types.is_numeric_dtype(df[c])]
    for c in numeric:
        summary[c] = float(ok[c].mean()) if len(ok) else math.nan
        if c in SUMMARY_STD:
            summary[f"{c}_std_images"] = float(ok[c].std()) if len(ok) > 1 else math.nan
    if scorer is not None and scorer.set:
        summary.update(set_metrics(cfg, cell, rd, df, scorer))
    summary["wall_seconds_this_call"] = wall
    atomic_write_csv(rd.file("summary.csv"), pd.DataFrame([summary]))
    upsert_leaderboard(cfg.run.leaderboard, summary)
    write_grid(cfg, cell, rd, cache)
    log_run(cfg, rd.path, rd.name, df, summary)
    return summary


def write_grid(cfg, cell, rd: RunDir, cache: MeasurementCache):
    recon = rd.reconstructions()
    ids = [i for i in cell.dataset.ids if str(i) in recon][: int(cfg.run.grid_images)]
    if not ids:
        return
    x, _ = cell.dataset.batch(ids)
    params, y, _ = cache.measure(cell.task, x, ids)
    shown = cell.task.bind(params).display(y)
    x_hat = torch.stack([recon[str(i)] for i in ids])
    save_grid(rd.file("grid.png"), shown, torch.nan_to_num(x_hat), x)
