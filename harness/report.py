"""Reports of a set of runs: tables per world with paired uncertainty, FID/KID with their N, plots, HTML.

A *world* is everything two solvers must share for their numbers to be compared: the dataset (split,
first id, image ids, number of images), the model and its weights, the task protocol (operator
parameters and noise), the per-set metric settings and the set of seeds. Runs of different worlds
never share a table: there is one table per world, and its rows are labelled by what varies inside it
(the solver and the solver parameters that differ, plus any other setting that differs, e.g.
run.num_samples). Two runs with the same label in one world (e.g. the same cell from two weight
files that describe themselves alike) are never averaged: the run name is added to tell them apart.

Uncertainty (paired benchmarks: every solver of a world sees the same measurements y):
  - each metric's mean over images with a 95% percentile-bootstrap interval over images
    (scipy.stats.bootstrap, `n_resamples` resamples, fixed seed); with several seeds the per-image
    values are first averaged over seeds, and the spread (std) over the seeds' means is shown too;
  - the paired per-image difference to a reference row (`reference`: a solver name or label) with its
    bootstrap interval; `*` marks an interval that excludes 0;
  - a column's best value is bold only when the paired difference to every other row's value has an
    interval that excludes 0 (beyond the noise). FID/KID have no per-image values: they are bold only
    when the best is apart from every other by more than 2 combined spreads (bootstrap for FID, subset
    or jackknife spread for KID).
FID/KID cells carry N (reconstructions) and the reference N, KID is shown ×10³, and a warning marks
N below the feature dimension (the covariance of N < D features is singular; FID is then dominated by
its bias and KID by its variance).
"""
from __future__ import annotations

import base64
import glob
import html
import json
import math
import os

import numpy as np
import pandas as pd

from core.errors import ConfigError

HIGHER_IS_BETTER = ("psnr", "ssim", "target_")  # prefixes; every other metric (lpips, fid, kid, sw2, mean_err, cost) is lower-better
SET_METRICS = ("fid", "kid")
# Columns that define the world (besides the seed set, handled apart): the data, the model, the task.
WORLD = ("dataset", "split", "dataset_start", "image_ids", "n_images", "model", "model_params", "task", "task_params",
         "noise", "sigma_y", "sigma_given", "sigma_space", "fid_features", "fid_mode", "fid_reference")
# Columns that may vary inside a world and then label its rows.
LABEL_EXTRA = ("num_samples", "prompt", "lpips_min_size", "edit_classifier")
BUDGET_KEYS = ("steps", "annealing_steps", "num_steps", "iters", "iterations")  # what a quality-vs-cost line runs along
COST_AXES = {"nfe": "NFE per reconstruction", "nfe_vjp": "NFE + VJP per reconstruction",
             "sec": "seconds per reconstruction"}
FEATURE_DIM = {"inception": 2048}


def higher_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER)


def fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}g}"
    return str(v)


def markdown_table(head: list, rows: list) -> str:
    """The one markdown-table writer (sweep reports and every benchmark). Pipes inside cells are escaped."""
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]) + "\n"


# ---------------------------------------------------------------------------------------------- loading

def load_leaderboard(root: str) -> pd.DataFrame:
    """One row per run under `root`: each run's summary, verified (`records.read_summaries`, the one reader)."""
    from harness.records import read_summaries

    df = read_summaries([root])
    if not len(df):
        raise ConfigError(f"no finished runs under {root}; run some cells first (python run.py ...).")
    return df


def per_image(root: str, run: str) -> pd.DataFrame | None:
    """The finished, non-diverged per-image rows of one run (None when its images.csv is absent)."""
    path = os.path.join(root, run, "images.csv")
    if not os.path.exists(path):
        return None
    df = pd.read_csv(path, dtype={"image_id": str})
    return df[df["status"] == "ok"] if "status" in df else df


def _canon(v):
    """A JSON column without what does not change results (paths: the weights' hash names them)."""
    if not isinstance(v, str) or not v.startswith("{"):
        return v
    d = json.loads(v)
    if "weights_sha" in d:
        d.pop("path", None)
    return json.dumps(d, sort_keys=True)


def _params(v) -> dict:
    return json.loads(v) if isinstance(v, str) and v.startswith("{") else {}


def _num_key(v):
    """Sort numbers as numbers (steps=20 before steps=100), everything else as text after them."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def assign_worlds(df: pd.DataFrame) -> pd.DataFrame:
    """Add `world` (an id per world, seed set included), `label` (what varies inside it) and `config`
    (the label without budget keys: one quality-vs-cost line per config). Linear in the number of runs:
    rows are grouped with dicts of positions, labels built in lists and assigned once."""
    df = df.copy()
    cols = [c for c in WORLD if c in df]
    canon = df[cols].apply(lambda s: s.map(_canon)).astype(str)
    base = [json.dumps(list(r)) for r in canon.itertuples(index=False, name=None)]
    params = df["solver_params"].map(_params).tolist() if "solver_params" in df else [{}] * len(df)
    solvers = df["solver"].tolist()
    extra = [c for c in LABEL_EXTRA if c in df]
    # first pass: labels inside each seed-free world, then the seed set of each label
    labels, configs, sortkeys = [""] * len(df), [""] * len(df), [()] * len(df)
    worlds = {}
    for k, b in enumerate(base):
        worlds.setdefault(b, []).append(k)
    for members in worlds.values():
        by_solver = {}
        for k in members:
            if isinstance(solvers[k], str):  # as groupby: a run without a solver gets no label
                by_solver.setdefault(solvers[k], []).append(k)
        for solver, ks in by_solver.items():
            keys = sorted({key for k in ks for key in params[k]})
            varying = [key for key in keys if len({json.dumps(params[k].get(key)) for k in ks}) > 1]
            for k in ks:
                p = params[k]
                labels[k] = " ".join([solver, *(f"{key}={p.get(key)}" for key in varying)])
                configs[k] = " ".join([solver, *(f"{key}={p.get(key)}" for key in varying if key not in BUDGET_KEYS)])
                sortkeys[k] = (solver, *(_num_key(p.get(key)) for key in varying))
    base = pd.Series(base, index=df.index)
    for c in extra:  # a setting that differs inside a world labels every row of that world
        differs = (df[c].astype(str).groupby(base, sort=False).transform("nunique") > 1).tolist()
        for k, (v, d) in enumerate(zip(df[c].tolist(), differs)):
            if d:
                labels[k] += f" {c}={v}"
                configs[k] += f" {c}={v}"
    df["label"], df["config"] = labels, configs
    seed_sets = {}
    for b, lab, seed in zip(base.tolist(), labels, df["seed"].tolist()):
        seed_sets.setdefault((b, lab), set()).add(seed)
    seed_text = {key: ",".join(str(x) for x in sorted(v)) for key, v in seed_sets.items()}
    seeds = pd.Series([seed_text[(b, lab)] for b, lab in zip(base.tolist(), labels)], index=df.index)
    df["seeds"] = seeds
    world_key = base + "|" + seeds
    ids = {k: n for n, k in enumerate(dict.fromkeys(world_key))}
    df["world"] = world_key.map(ids)
    # the same label and seed twice in one world: never averaged, told apart by run name
    dup = df.duplicated(["world", "label", "seed"], keep=False)
    df.loc[dup, "label"] = df.loc[dup, "label"] + " [" + df.loc[dup, "run"].astype(str) + "]"
    df["sortkey"] = [sk + ((lab,),) for sk, lab in zip(sortkeys, df["label"].tolist())]
    return df


def describe_world(w: pd.DataFrame) -> dict:
    """The protocol of one world, for its heading (what every row of it shares)."""
    r = w.iloc[0]
    out = {"dataset": f"{r.get('dataset')} split={r.get('split')} ids={r.get('image_ids')} "
                      f"(n={r.get('n_images')}, start={r.get('dataset_start')})",
           "model": f"{r.get('model')} {_canon(r.get('model_params'))}",
           "task": f"{r.get('task')} {r.get('task_params')}",
           "noise": f"{r.get('noise')} sigma_y={r.get('sigma_y')}",
           "seeds": str(r.get("seeds"))}
    if isinstance(r.get("fid_features"), str):
        out["fid/kid"] = f"features={r.get('fid_features')} mode={r.get('fid_mode')} reference={r.get('fid_reference')}"
    return out


def world_title(w: pd.DataFrame) -> str:
    r = w.iloc[0]
    return f"{r.get('dataset')}/{r.get('split')} × {r.get('model')} × {r.get('task')} (seeds {r.get('seeds')})"


# ----------------------------------------------------------------------------------------- uncertainty

def bootstrap_ci(values, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` with a percentile-bootstrap interval over them."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) < 2 or np.ptp(v) == 0:
        return float(v.mean()), float(v.mean()) if len(v) > 1 else math.nan, float(v.mean()) if len(v) > 1 else math.nan
    res = bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=level, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return float(v.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(a: pd.Series, b: pd.Series, **kw) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a − b over the image ids both have (a, b: per-image values indexed by id)."""
    common = a.index.intersection(b.index)
    d = (a.loc[common] - b.loc[common]).dropna()
    return (*bootstrap_ci(d.values, **kw), len(d))


def significant(lo: float, hi: float) -> bool:
    return np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0)


def _images(root: str, runs: pd.DataFrame, metric: str) -> pd.Series | None:
    """Per-image values of one row's runs (one per seed), averaged over seeds; None if unavailable."""
    per = []
    for run in runs["run"]:
        df = per_image(root, run)
        if df is None or metric not in df:
            return None
        per.append(df.set_index("image_id")[metric].astype(float))
    return pd.concat(per, axis=1).mean(axis=1) if per else None


def feature_dim(r) -> float:
    d = r.get("fid_dim") if hasattr(r, "get") else None
    if d is not None and np.isfinite(float(d)):
        return float(d)
    return float(FEATURE_DIM.get(str(r.get("fid_features")), math.nan))


def world_table(root: str, w: pd.DataFrame, metrics: list[str], reference: str | None = None,
                n_resamples: int = 2000) -> dict:
    """The numbers of one world: rows (sorted), and per (row, metric) the mean, interval, seed spread,
    paired difference to the reference row, bold flag; FID/KID with N, reference N and spread."""
    groups = dict(list(w.groupby("label", sort=False)))  # one pass, not one mask per label
    first = {lab: g["sortkey"].iloc[0] for lab, g in groups.items()}
    order = sorted(first, key=first.get)
    rows = {lab: groups[lab] for lab in order}
    ref = None
    if reference:
        hits = [lab for lab in order if lab == reference] or [lab for lab in order if lab.split()[0] == reference]
        ref = hits[0] if hits else None
    cells, warnings = {}, []
    for m in metrics:
        if m not in w:
            continue
        set_metric = m in SET_METRICS
        imgs = {lab: (None if set_metric else _images(root, r, m)) for lab, r in rows.items()}
        for lab, r in rows.items():
            c = {"mean": float(r[m].mean()) if r[m].notna().any() else math.nan, "lo": math.nan, "hi": math.nan,
                 "seed_sd": float(r.groupby("seed")[m].mean().std()) if r["seed"].nunique() > 1 else math.nan}
            if set_metric:
                c.update(_set_cell(r, m))
                if c["n"] and np.isfinite(c["dim"]) and c["n"] < c["dim"]:
                    warnings.append((m, c["n"], c["nref"], int(c["dim"])))
            elif imgs[lab] is not None:
                c["mean"], c["lo"], c["hi"] = bootstrap_ci(imgs[lab].values, n_resamples)
                c["n"] = int(imgs[lab].notna().sum())
            if ref is not None and lab != ref and imgs.get(lab) is not None and imgs.get(ref) is not None:
                c["diff"] = paired_difference(imgs[lab], imgs[ref], n_resamples=n_resamples)
            cells[(lab, m)] = c
        _mark_best(cells, order, m, imgs, n_resamples)
    small = {}
    for m, n, nref, dim in warnings:
        small.setdefault((n, nref, dim), []).append(m)
    notes = [f"{', '.join(dict.fromkeys(ms))} from N={n} images (reference N={nref}) < feature dimension {dim}"
             for (n, nref, dim), ms in sorted(small.items())]
    return {"rows": order, "metrics": [m for m in metrics if m in w], "cells": cells, "reference": ref,
            "warnings": notes, "n_runs": len(w), "runs": rows}


def _set_cell(r: pd.DataFrame, m: str) -> dict:
    row = r.iloc[0]
    n = int(row.get("fid_n", 0) or 0) if pd.notna(row.get("fid_n")) else 0
    nref = int(row.get("fid_ref_n", 0) or 0) if pd.notna(row.get("fid_ref_n")) else 0
    if m == "kid":
        sd = row.get("kid_std", math.nan)
        if not (pd.notna(sd) and sd > 0):  # one subset (N <= subset size): the jackknife spread instead
            sd = row.get("kid_jack_std", math.nan)
    else:
        sd = row.get(f"{m}_std", math.nan)
    return {"n": n, "nref": nref, "sd": float(sd) if pd.notna(sd) else math.nan, "dim": feature_dim(row)}


def _mark_best(cells: dict, order: list, m: str, imgs: dict, n_resamples: int):
    vals = {lab: cells[(lab, m)]["mean"] for lab in order if np.isfinite(cells[(lab, m)]["mean"])}
    if len(vals) < 2:
        return
    best = max(vals, key=vals.get) if higher_better(m) else min(vals, key=vals.get)
    apart = []
    for lab in vals:
        if lab == best:
            continue
        if imgs.get(best) is not None and imgs.get(lab) is not None:
            _, lo, hi, _ = paired_difference(imgs[best], imgs[lab], n_resamples=n_resamples)
            apart.append(significant(lo, hi))
        else:
            sb, so = cells[(best, m)].get("sd", math.nan), cells[(lab, m)].get("sd", math.nan)
            gap = abs(vals[best] - vals[lab])
            apart.append(np.isfinite(sb) and np.isfinite(so) and gap > 2 * math.hypot(sb, so))
    cells[(best, m)]["bold"] = all(apart)


def cell_text(c: dict, m: str, latex: bool = False) -> str:
    """'mean [lo, hi]' (± seed spread), FID/KID with '± spread (N=n/ref)'; KID ×10³."""
    if c is None or not np.isfinite(c["mean"]):
        return ""
    pm = " $\\pm$ " if latex else " ± "
    if m in SET_METRICS:
        k = 1e3 if m == "kid" else 1.0
        txt = fmt(c["mean"] * k, 3) + ("" if not np.isfinite(c["sd"]) else pm + fmt(c["sd"] * k, 2))
        txt += f" (N={c['n']}/{c['nref']})" + (" ⚠" if np.isfinite(c["dim"]) and c["n"] < c["dim"] and not latex else "")
    else:
        txt = fmt(c["mean"])
        if np.isfinite(c["lo"]):
            txt += f" [{fmt(c['lo'])}, {fmt(c['hi'])}]"
        if np.isfinite(c.get("seed_sd", math.nan)):
            txt += pm + fmt(c["seed_sd"], 2) + (" (seeds)" if not latex else "")
    if c.get("bold"):
        txt = f"\\textbf{{{txt}}}" if latex else f"**{txt}**"
    return txt


def diff_text(c: dict) -> str:
    if c is None or "diff" not in c or not np.isfinite(c["diff"][0]):
        return ""
    d, lo, hi, _ = c["diff"]
    return f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]" + ("*" if significant(lo, hi) else "")


def column_name(m: str, latex: bool = False) -> str:
    arrow = ("$\\uparrow$" if higher_better(m) else "$\\downarrow$") if latex else ("↑" if higher_better(m) else "↓")
    name = "kid×10³" if m == "kid" else m
    if latex:
        name = name.replace("_", "\\_").replace("×10³", "$\\times 10^3$")
    return f"{name} {arrow}"


def table_rows(t: dict) -> tuple[list, list]:
    head = ["solver"]
    for m in t["metrics"]:
        head.append(column_name(m))
        if t["reference"] and m not in SET_METRICS:
            head.append(f"Δ{m} vs {t['reference']}")
    rows = []
    for lab in t["rows"]:
        r = [lab]
        for m in t["metrics"]:
            c = t["cells"].get((lab, m))
            r.append(cell_text(c, m))
            if t["reference"] and m not in SET_METRICS:
                r.append("ref." if lab == t["reference"] else diff_text(c))
        rows.append(r)
    return head, rows


LEGEND = ("mean over images [95% bootstrap interval over images]; ± (seeds): std over seeds; FID/KID: value ± spread "
          "(FID: bootstrap over reconstructions; KID ×10³: subset spread, or jackknife when one subset holds all) with "
          "N = reconstructions / reference images; Δ: paired per-image difference to the reference row [95% interval], "
          "* = interval excludes 0; bold = best beyond the interval of every other row.")


def markdown_world(t: dict, title: str, protocol: dict) -> str:
    head, rows = table_rows(t)
    text = f"### {title}\n\n" + "".join(f"- {k}: `{v}`\n" for k, v in protocol.items()) + "\n"
    text += markdown_table(head, rows)
    for wmsg in t["warnings"]:
        text += f"\n⚠ {wmsg}: the feature covariance is singular, FID is dominated by its bias and KID by its variance."
    return text + ("\n" if t["warnings"] else "")


def latex_world(t: dict, title: str) -> str:
    cols = t["metrics"]
    head = ["solver", *(column_name(m, latex=True) for m in cols)]
    lines = [f"% {title}; " + LEGEND.replace("%", "\\%"), "\\begin{tabular}{l" + "c" * len(cols) + "}", "\\toprule",
             " & ".join(head) + " \\\\", "\\midrule"]
    for lab in t["rows"]:
        lines.append(" & ".join([lab.replace("_", "\\_"), *(cell_text(t["cells"].get((lab, m)), m, latex=True)
                                                            .replace("_", "\\_") for m in cols)]) + " \\\\")
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


# ---------------------------------------------------------------------------------------------- plots

def cost_of(r: pd.DataFrame, axis: str) -> float:
    if axis == "nfe":
        return float(r["nfe"].mean()) if "nfe" in r else math.nan
    if axis == "nfe_vjp":
        return float(r["nfe"].mean() + (r["vjp"].mean() if "vjp" in r else 0.0)) if "nfe" in r else math.nan
    if axis == "sec":
        return float(r["sec_per_sample"].mean()) if "sec_per_sample" in r else math.nan
    raise ConfigError(f"unknown cost axis {axis!r}; choose one of {', '.join(COST_AXES)}.")


def pareto(points: list[tuple[float, float]], higher: bool) -> list[int]:
    """Indices of the points no other point beats in both cost (lower) and quality."""
    out = []
    for i, (c, q) in enumerate(points):
        better = lambda q2, q1: q2 > q1 if higher else q2 < q1  # noqa: E731
        dominated = any((c2 <= c and (better(q2, q) or q2 == q) and (c2 < c or better(q2, q)))
                        for j, (c2, q2) in enumerate(points) if j != i)
        if not dominated:
            out.append(i)
    return out


def quality_vs_cost(w: pd.DataFrame, t: dict, metric: str, axis: str, path: str, title: str,
                    logy: bool = False) -> str | None:
    """One line per solver configuration along its budget, bootstrap error bars, the Pareto front marked
    (`logy`: a log quality axis, e.g. round-trip errors spanning many decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = []
    for lab in t["rows"]:
        r = t["runs"][lab]
        c = t["cells"].get((lab, metric))
        if c is None or not np.isfinite(c["mean"]):
            continue
        lo, hi, k = c["lo"], c["hi"], 1e3 if metric == "kid" else 1.0
        if not np.isfinite(lo) and np.isfinite(c.get("sd", math.nan)):  # FID/KID: ± their spread
            lo, hi = c["mean"] - c["sd"], c["mean"] + c["sd"]
        pts.append((r["config"].iloc[0], cost_of(r, axis), c["mean"] * k, lo * k, hi * k, lab))
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    flat = [p for p in pts if not (np.isfinite(p[1]) and p[1] > 0)]
    for k, cfg in enumerate(dict.fromkeys(p[0] for p in pts if p not in flat)):
        ps = sorted((p for p in pts if p[0] == cfg and p not in flat), key=lambda p: p[1])
        x, y = [p[1] for p in ps], [p[2] for p in ps]
        err = np.array([[max(p[2] - p[3], 0) if np.isfinite(p[3]) else 0 for p in ps],
                        [max(p[4] - p[2], 0) if np.isfinite(p[4]) else 0 for p in ps]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=cfg, color=f"C{k % 10}")
    for k, p in enumerate(flat):  # no network calls (exact sampler, pseudo-inverse): a reference level
        ax.axhline(p[2], ls=":", lw=1, color=f"C{(k + 5) % 10}", label=f"{p[5]} (no cost)")
    real = [p for p in pts if p not in flat]
    if real:
        front = sorted((real[i] for i in pareto([(p[1], p[2]) for p in real], higher_better(metric))), key=lambda p: p[1])
        ax.plot([p[1] for p in front], [p[2] for p in front], ls="--", color="k", lw=1, zorder=0, label="Pareto front")
        ax.scatter([p[1] for p in front], [p[2] for p in front], s=120, facecolors="none", edgecolors="k", zorder=3)
        if max(p[1] for p in real) / max(min(p[1] for p in real), 1e-12) > 5:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

            ax.set_xscale("log")  # ticks at 1, 2, 5 × 10^k in plain numbers (no overlapping minor labels)
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(COST_AXES[axis])
    ax.set_ylabel(f"{'kid ×10³' if metric == 'kid' else metric} ({'higher' if higher_better(metric) else 'lower'} is better)"
                  + (" ± spread" if metric in SET_METRICS else " [95% CI]"))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def world_grid(root: str, w: pd.DataFrame, t: dict, path: str, max_images: int = 8) -> str | None:
    """Rows: measurement, each solver's first reconstruction, truth; labelled; images from each run's grid.pt."""
    from harness.grid import labelled_grid

    import torch

    data, rows = None, []
    for lab in t["rows"]:
        run = t["runs"][lab]["run"].iloc[0]
        p = os.path.join(root, run, "grid.pt")
        if not os.path.exists(p):
            continue
        g = torch.load(p, weights_only=True)
        data = data or g
        rows.append((lab, g["recon"][:max_images]))
    if data is None:
        return None
    n = min(len(data["truth"]), max_images, *(len(r) for _, r in rows))
    labelled_grid(path, [("measurement", data["measurement"][:n]), *((lab, r[:n]) for lab, r in rows),
                         ("truth", data["truth"][:n])])
    return path


# --------------------------------------------------------------------------------------------- report

def build(root: str, metrics: list[str], reference: str | None = None, n_resamples: int = 2000,
          df: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list]:
    """[(world rows, table, title, protocol)] for every world under `root`."""
    df = assign_worlds(load_leaderboard(root) if df is None else df)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ConfigError(f"{', '.join(missing)} is not a summary column; choose numeric columns of the runs' "
                          f"summary.csv (e.g. psnr, ssim, lpips_vgg, sw2, mean_err, fid, kid).")
    worlds = []
    for _, w in df.groupby("world", sort=True):
        worlds.append((w, world_table(root, w, metrics, reference, n_resamples), world_title(w), describe_world(w)))
    return df, worlds


def markdown(worlds: list, root: str) -> str:
    text = f"{sum(t['n_runs'] for _, t, _, _ in worlds)} runs under {root}, {len(worlds)} world(s). {LEGEND}\n\n"
    return text + "\n".join(markdown_world(t, title, proto) for _, t, title, proto in worlds)


def latex(worlds: list) -> str:
    return "\n".join(latex_world(t, title) for _, t, title, _ in worlds)


def write_report(root: str, out: str, metrics: list[str], reference: str | None = None, cost: str = "nfe",
                 n_resamples: int = 2000, command: str = "", df: pd.DataFrame | None = None) -> str:
    """table.md, table.tex, leaderboard.csv, plots, labelled grids and index.html into `out`; returns markdown."""
    from core.files import atomic_write_text
    from harness.records import atomic_write_csv

    if cost not in COST_AXES:
        raise ConfigError(f"unknown cost axis {cost!r}; choose one of {', '.join(COST_AXES)}.")
    df, worlds = build(root, metrics, reference, n_resamples, df=df)
    os.makedirs(out, exist_ok=True)
    text = markdown(worlds, root)
    atomic_write_text(os.path.join(out, "table.md"), (f"`{command}`\n\n" if command else "") + text)
    atomic_write_text(os.path.join(out, "table.tex"), latex(worlds))
    atomic_write_csv(os.path.join(out, "leaderboard.csv"),
                     df.drop(columns=["sortkey"]).sort_values(["world", "label"]))
    for old in glob.glob(os.path.join(out, "world*_*.png")) + glob.glob(os.path.join(out, "quality_vs_*.png")):
        os.remove(old)  # plots of an earlier report with other worlds
    figures = {}
    for w, t, title, _ in worlds:
        k = int(w["world"].iloc[0])
        figs = []
        if "nfe" in w:
            for m in t["metrics"]:
                p = quality_vs_cost(w, t, m, cost, os.path.join(out, f"world{k}_{m}_vs_{cost}.png"), f"{title}: {m}")
                if p:
                    figs.append(p)
        g = world_grid(root, w, t, os.path.join(out, f"world{k}_grid.png"))
        figures[k] = (figs, g)
    atomic_write_text(os.path.join(out, "index.html"), html_report(worlds, figures, root, command))
    return text


def _img(path: str, cls: str = "") -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return f'<img class="{cls}" src="data:image/png;base64,{data}" alt="{html.escape(os.path.basename(path))}">'


SORT_JS = """
function sortTable(th){const table=th.closest('table'),idx=[...th.parentNode.children].indexOf(th);
const body=table.tBodies[0],rows=[...body.rows],asc=th.dataset.dir!=='asc';
const key=r=>{const t=(r.cells[idx].dataset.v!==undefined)?r.cells[idx].dataset.v:r.cells[idx].textContent;
const f=parseFloat(t);return isNaN(f)?t:f;};
rows.sort((a,b)=>{const x=key(a),y=key(b);if(typeof x==='number'&&typeof y==='number')return asc?x-y:y-x;
if(typeof x==='number')return -1;if(typeof y==='number')return 1;return asc?String(x).localeCompare(y):String(y).localeCompare(x);});
rows.forEach(r=>body.appendChild(r));[...th.parentNode.children].forEach(h=>delete h.dataset.dir);th.dataset.dir=asc?'asc':'desc';}
"""

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px}th{background:#eee;cursor:pointer}
th[data-dir=asc]::after{content:' ▲'}th[data-dir=desc]::after{content:' ▼'}.bold{font-weight:bold}
.warn{color:#a40;font-weight:bold}img{max-width:100%;margin:4px}img.plot{width:560px}code{font-size:12px}"""


def html_report(worlds: list, figures: dict, root: str, command: str = "") -> str:
    """One self-contained page: no network, images inlined; tables sortable by clicking a header."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>diffinv-bench report</title>",
             f"<style>{CSS}</style><script>{SORT_JS}</script></head><body>",
             f"<h1>diffinv-bench report</h1><p>{sum(t['n_runs'] for _, t, _, _ in worlds)} runs under "
             f"<code>{e(root)}</code>, {len(worlds)} world(s).</p>",
             f"<p><code>{e(command)}</code></p>" if command else "", f"<p>{e(LEGEND)}</p>"]
    for w, t, title, proto in worlds:
        k = int(w["world"].iloc[0])
        parts.append(f"<h2 id='world{k}'>World {k}: {e(title)}</h2><ul>" +
                     "".join(f"<li>{e(a)}: <code>{e(b)}</code></li>" for a, b in proto.items()) + "</ul>")
        head, rows = table_rows(t)
        parts.append(f"<table class='results' id='table{k}'><thead><tr>" +
                     "".join(f"<th onclick='sortTable(this)'>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
        for lab, r in zip(t["rows"], rows):
            tds = [f"<td data-v='{e(lab)}'>{e(r[0])}</td>"]
            j = 1
            for m in t["metrics"]:
                c = t["cells"].get((lab, m)) or {}
                v = c.get("mean", math.nan)
                cls = " class='bold'" if c.get("bold") else ""
                tds.append(f"<td data-v='{v if np.isfinite(v) else ''}'{cls}>{e(r[j].strip('*') if c.get('bold') else r[j])}</td>")
                j += 1
                if t["reference"] and m not in SET_METRICS:
                    d = c.get("diff", (math.nan,))[0]
                    tds.append(f"<td data-v='{d if np.isfinite(d) else ''}'>{e(r[j])}</td>")
                    j += 1
            parts.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f"<p class='warn'>⚠ {e(msg)}: the feature covariance is singular; FID is dominated by its bias "
                  f"and KID by its variance.</p>" for msg in t["warnings"]]
        figs, grid = figures.get(k, ([], None))
        parts += [_img(p, 'plot') for p in figs]
        if grid:
            parts.append(f"<h3>Reconstructions (rows: measurement, each solver, truth)</h3>{_img(grid)}")
    parts.append("</body></html>")
    return "\n".join(parts)
