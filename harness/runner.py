"""The loop of one cell: batches of images, frozen measurements, solve, score, record, resume."""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import resource
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from harness.build import Cell, build_cell
from harness.cache import MeasurementCache
from harness.grid import save_grid
from harness.loggers import check_logger, log_batch, log_run, start_run
from harness.records import RunDir, atomic_write_csv, check_leaderboard, git_commit, locked, upsert_leaderboard
from harness.scoring import Scorer, condition, score_image, set_metrics
from harness.validate import check_cell, declared
from metrics.roundtrip import roundtrip_errors
from core.errors import ConfigError
from core.rng import generator

if TYPE_CHECKING:  # pandas is imported where it is used: it costs ~0.45 CPU-s of every start (results/startup.md)
    import pandas as pd

PER_SAMPLE = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "target_acc", "target_prob")
SUMMARY_STD = (*PER_SAMPLE, "psnr_best", *(f"{m}_bestpsnr" for m in PER_SAMPLE[1:]), "sw2", "mean_err")


# What only says where results go and how fast they are made: outside a cell's identity (README "What
# defines a cell"). Everything else in the resolved config is inside, so a new option is part of the
# identity unless it is added here: one that changes results cannot be forgotten.
OUTSIDE = {
    "run": ("name", "root", "leaderboard", "cache", "grid_images", "progress", "shard", "finish"),
    "compute": ("device", "batch_size", "num_workers", "compile", "channels_last", "tf32"),
    "solver": ("tune",),  # the tunable ranges (harness/tune.py): declaring them never renames a cell
    "metrics": ("weights_dir",),  # where the metric weight files are read (their bytes are the libraries')
    "logger": None,  # the whole node: where rows are also sent
    "names": None,   # the chosen config names: they label the run (its name's prefix), the values are hashed
}


def cell_config(cfg: DictConfig) -> dict:
    """The resolved config less the keys OUTSIDE the identity (no fingerprints: see `cell_key`)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    for node, keys in OUTSIDE.items():
        if keys is None:
            out.pop(node, None)
        else:
            for k in keys:
                out.get(node, {}).pop(k, None)
    out["seed"] = declared("seed", out.get("seed"))  # the check check_config makes (harness/validate.py)
    return out


def _location(v) -> bool:
    """A filesystem location in a config value: absolute, explicitly relative, or an existing path with a
    separator (a bare word such as a split name is never one, whatever the working directory holds)."""
    return isinstance(v, str) and (os.path.isabs(v) or v.startswith(("./", "../", "~"))
                                   or (os.sep in v and os.path.exists(v)))


def _file_sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def dataset_fingerprint(dataset) -> str:
    """The ids, prompts and images of a dataset: for image folders each file's name and size (cheap; every
    image's bytes also enter its measurement key), for in-memory datasets the decoded images."""
    ids = list(dataset.ids)
    h = hashlib.sha256(json.dumps([str(i) for i in ids]).encode())
    if hasattr(dataset, "file"):
        for i in ids:
            f = dataset.file(i)
            h.update(f"{os.path.basename(str(f))}:{os.path.getsize(f)}:{dataset.caption(i)}".encode())
    elif ids:
        x, captions = dataset.batch(ids)
        h.update(x.detach().cpu().float().contiguous().numpy().tobytes())
        h.update(json.dumps([None if c is None else str(c) for c in captions]).encode())
    return h.hexdigest()[:16]


def cell_key(cfg: DictConfig, cell: Cell) -> dict:
    """A cell's identity: its config less what is OUTSIDE, with locations replaced by what they hold:
    the model's weights fingerprint for its path, the dataset's ids/prompts/images for its files, a
    statistics file's sha for metrics.fid_reference. Never an absolute path: moved checkouts resume."""
    key = cell_config(cfg)
    weights = cell.prior.describe().get("weights_sha")
    if weights:
        key["model"] = {k: v for k, v in key["model"].items() if not _location(v)}
        key["model"]["weights_sha"] = weights
    key["dataset"] = {k: v for k, v in key["dataset"].items() if not _location(v)}
    key["dataset"]["fingerprint"] = dataset_fingerprint(cell.dataset)
    ref = key.get("metrics", {}).get("fid_reference")
    if _location(ref) and os.path.isfile(os.path.expanduser(ref)):
        key["metrics"]["fid_reference"] = {"sha256": _file_sha(os.path.expanduser(ref))}
    return key


def run_name(cfg: DictConfig, cell: Cell | None = None, key: dict | None = None) -> str:
    """<dataset>_<task>_<solver>_<model>_s<seed>_<hash of cell_key>; `cell` is built when not given, `key`
    (its cell_key) computed when not given."""
    if cfg.run.get("name"):
        return str(cfg.run.name)
    if key is None:
        key = cell_key(cfg, cell if cell is not None else build_cell(cfg))
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    choices = {k: _choice(cfg, k) for k in ("dataset", "task", "solver", "model")}
    return "{dataset}_{task}_{solver}_{model}".format(**choices) + f"_s{declared('seed', cfg.seed)}_{h}"


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
        **{k: bool(cfg.compute.get(k, False)) for k in ("compile", "channels_last", "tf32")},
        "torch": torch.__version__,
    }


def run_prompts(cfg: DictConfig, captions: list) -> list:
    """Each image's prompt: its caption or class name (run.prompt=dataset), None (null: unconditional), or
    the one prompt given."""
    mode = cfg.run.get("prompt", "dataset")
    if mode == "dataset":
        return list(captions)
    return [None if mode is None else str(mode)] * len(captions)


def _exact_metrics_apply(cfg, cell) -> bool:
    mode = str(cfg.metrics.posterior).lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"metrics.posterior must be auto, true or false, not {mode!r}.")
    ok = getattr(cell.prior, "exact", False) and cell.task.linear and cell.task.noise.gaussian
    if mode == "true" and not ok:
        raise ConfigError("metrics.posterior=true needs model=gmm and a linear task with Gaussian noise; "
                          "use metrics.posterior=auto.")
    return ok and mode != "false"


def shard_of(cfg: DictConfig) -> tuple[int, int] | None:
    """run.shard=K/N as (K, N), or None for the whole cell."""
    value = cfg.run.get("shard")
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not m or not int(m.group(2)) >= 1 or not int(m.group(1)) < int(m.group(2)):
        raise ConfigError(f"run.shard must be K/N with 0 <= K < N (e.g. run.shard=0/4), got {value!r}.")
    return int(m.group(1)), int(m.group(2))


def shard_ids(ids: list, shard: tuple[int, int] | None) -> list:
    """The image ids of shard K of N: every N-th id from the K-th, ids[K::N] (strided, so shards are
    within one image of each other in size whatever the dataset's order; the partition depends only on
    the cell's id list, K and N)."""
    return list(ids) if shard is None else list(ids)[shard[0]:: shard[1]]


def run_cell(cfg: DictConfig, *, after_batch=None) -> dict:
    """Run (or resume) one cell, or one shard of it (run.shard=K/N: ids[K::N]); return its summary row.
    A shard writes only its own batches; whoever sees every image of the cell recorded finishes it
    (images.csv, summary, set metrics, grid, leaderboard row) under the cell's lock. run.finish=true
    only finishes (no compute). `after_batch(k)` is a test hook."""
    shard = shard_of(cfg)
    finish_only = bool(cfg.run.get("finish", False))
    check_leaderboard(cfg.run.leaderboard)  # an unreadable leaderboard is found now, not after the compute
    cell = build_cell(cfg)  # first: harness.validate.check_config, then the objects, before any file
    exact = _exact_metrics_apply(cfg, cell)
    check_logger(cfg)
    check_cell(cfg, cell)  # a prompt (or null) the prior cannot take, steps beyond its schedule: before any file
    scorer = Scorer(cfg, cell)
    identity = cell_key(cfg, cell)  # once: the dataset fingerprint decodes in-memory datasets' images
    name = run_name(cfg, cell, identity)
    rd = RunDir(cfg.run.root, name)
    rd.claim(identity, OmegaConf.to_yaml(_cell_view(cfg), resolve=True))
    start_run(cfg, name)  # W&B (logger=wandb): per-batch rows, running means; a cell that raises shows as crashed

    seed, N = int(cfg.seed), int(cfg.run.num_samples)
    prior, task, solver, dataset = cell.prior, cell.task, cell.solver, cell.dataset
    # the dataset enters measurement keys as it enters the identity: its config less locations, and its
    # fingerprint (ids, file names and sizes, captions); never its folder, so moved data reuses the cache
    cache = MeasurementCache(cfg.run.cache, identity["task"], identity["dataset"], seed)
    protocol = {"run": name, **_protocol(cfg, cell), **scorer.describe()}
    per_batch = max(1, int(cfg.compute.batch_size) // N)

    done = rd.done_ids()
    mine = shard_ids(dataset.ids, shard)
    todo = [] if finish_only else [i for i in mine if str(i) not in done]
    if finish_only and len(done & {str(i) for i in dataset.ids}) < len(dataset.ids):
        raise ConfigError(f"cell {name} has {len(done)} of its {len(dataset.ids)} images recorded; run its missing "
                          "shards (or the whole cell) before run.finish=true.")
    bar = tqdm(total=len(mine), initial=len(mine) - len(todo), desc=name if shard is None else
               f"{name} [{shard[0]}/{shard[1]}]", unit="img",
               disable=not cfg.run.progress)
    t_start = time.perf_counter()
    batches = [todo[s: s + per_batch] for s in range(0, len(todo), per_batch)]  # decoded ahead by num_workers threads
    for k, (ids, (x, captions)) in enumerate(zip(batches, dataset.batches(batches, int(cfg.compute.num_workers)))):
        params, y, keys = cache.measure(task, x, ids)
        bound = task.bind(params).repeat(N).to(cell.device, cell.dtype)
        y_n = y.repeat_interleave(N, 0).to(cell.device, cell.dtype)
        gens = [generator(seed, "solver", i, r, device=cell.device) for i in ids for r in range(N)]
        prompts = run_prompts(cfg, captions)
        cond = condition(prior, prompts, N)

        prior.cost.reset()
        if cell.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(cell.device)
        _sync(cell.device)
        if k == 0 and os.environ.get("DIFFINV_STARTUP_CPU"):  # CPU seconds from process start to the first solve
            print(f"startup_cpu_s={time.process_time():.3f}", file=sys.stderr, flush=True)
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
        log_batch(rows, x_hat)
        bar.update(len(ids))
        if after_batch is not None:
            after_batch(k)
    bar.close()
    with locked(rd.file("finish")):  # one finisher at a time; the others see the finished cell (idempotent)
        recorded = rd.done_ids() & {str(i) for i in dataset.ids}
        if len(recorded) == len(dataset.ids):
            return finish(cfg, cell, rd, protocol, cache, time.perf_counter() - t_start, scorer)
    shard = shard or (0, 1)  # (a whole cell with images missing cannot get here: it just recorded them)
    print(f"shard {shard[0]}/{shard[1]} of {name}: {len(mine)} image(s) recorded; the cell has {len(recorded)} of "
          f"{len(dataset.ids)}, it is finished by the shard that completes it (or run.finish=true).", file=sys.stderr)
    return {"run": name, "shard": f"{shard[0]}/{shard[1]}", "n_images": len(recorded), "finished": False}


def _cell_view(cfg: DictConfig) -> DictConfig:
    """The config as the cell's (not one shard's): config.yaml is the same bytes whichever shard writes it."""
    view = cfg.copy()
    with open_dict(view):
        view.run.shard = None
        view.run.finish = False
    return view


COST = ("sec_per_sample", "metric_sec_per_sample", "peak_mem_mb", "peak_rss_mb")  # with the prior's Cost fields
PER_IMAGE_TEXT = ("image_id", "measurement_key", "timestamp", "status")  # never carried into the summary
# protocol columns outside the cell identity that say how the images were computed (code, library, hardware):
# a resumed or sharded cell's summary carries its images' own values, not the finishing call's
PROVENANCE = ("git_commit", "torch", "device", "batch_size", "compile", "channels_last", "tf32")


def summarize(df: pd.DataFrame, protocol: dict, cost: tuple) -> dict:
    """The summary of a cell's rows: protocol values carried; metrics averaged over the images that did
    not diverge (with their spread over images); cost columns (`cost`) averaged over every image, since
    the compute ran for the diverged ones too; other text columns carried only where every image agrees.
    PROVENANCE columns are the images' own: one value, or the distinct values in order of first appearance
    joined by "; " (a cell resumed at another commit, or sharded over devices, says so)."""
    import pandas as pd

    ok = df[df["status"] == "ok"] if len(df) else df
    out = {**protocol, "n_images": len(df), "n_ok": len(ok), "n_diverged": int((df["status"] == "diverged").sum())
           if len(df) else 0, "image_ids": f"{df['image_id'].iloc[0]}..{df['image_id'].iloc[-1]}" if len(df) else ""}
    for c in PROVENANCE:
        if c in protocol and c in df.columns and df[c].notna().all() and len(df):
            seen = list(dict.fromkeys(df[c].tolist()))
            out[c] = seen[0] if len(seen) == 1 else "; ".join(str(v) for v in seen)
    for c in df.columns:
        if c in protocol or c in PER_IMAGE_TEXT or c == "best_sample":
            continue
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            values = df[c].dropna().unique()
            if len(values) == 1 and df[c].notna().all():
                out[c] = values[0]
            continue
        rows = df if c in cost else ok
        out[c] = float(rows[c].mean()) if len(rows) else math.nan
        if c in SUMMARY_STD:
            out[f"{c}_std_images"] = float(ok[c].std()) if len(ok) > 1 else math.nan
    return out


def finish(cfg, cell, rd: RunDir, protocol: dict, cache: MeasurementCache, wall: float, scorer: Scorer = None) -> dict:
    import pandas as pd

    df = rd.read_parts()
    order = {str(i): n for n, i in enumerate(cell.dataset.ids)}
    df = df.sort_values("image_id", key=lambda s: s.map(order)).reset_index(drop=True)
    atomic_write_csv(rd.file("images.csv"), df)

    summary = summarize(df, protocol, (*cell.prior.cost.snapshot(), *COST))
    if scorer is not None and scorer.set:
        summary.update(set_metrics(cfg, cell, rd, df, scorer, cache.dataset))
    summary["wall_seconds_this_call"] = wall
    rd.write_summary(pd.DataFrame([summary]))
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
