"""Seed papers' headline claims against quality-vs-cost curves measured here: results/claims.md + plots.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/claims.py                      # every claim, then the report
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/claims.py --claims stsl,graikos --no-report   # a subset
    python benchmarks/claims.py --tiny --out /tmp/claims.md --root /tmp/claims_runs          # seconds (the test)

Every point of a curve is one cell, `python run.py <world> task=T solver=S solver.steps=K` (composed with
harness.cli.compose, run with harness.runner.run_cell, so a rerun resumes and a finished cell costs nothing),
at the solver's configured defaults except the swept budget (`solver.steps`), on the worlds' test splits;
nothing is tuned on these images. Plots are harness.report.quality_vs_cost (bootstrap 95% intervals over
images, Pareto front), tables harness.report.markdown_table.

Read-outs from the curves (stated in the report too):
- cost at equal quality: the cost at which a curve first reaches the target quality, by linear interpolation
  between the two grid points around the crossing, in log(cost) against quality; "≤ c" when the smallest
  budget already reaches it, "> c" when no budget of the grid does;
- quality at equal cost: the measured points at the NFE both solvers ran (same grid), with the paired
  per-image difference and its 95% bootstrap interval (harness.report.paired_difference).
Verdicts follow fixed rules written next to each claim (RULES), applied to these read-outs.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.errors import ConfigError  # noqa: E402

COST_NAMES = {"nfe": "NFE", "nfe_vjp": "NFE + UNet VJP", "sec": "s / reconstruction"}


@dataclass
class Series:
    label: str                 # shown in the tables
    solver: str                # solver= config
    steps: list                # the budget grid (solver.steps)
    default: int               # the configured default steps (the claim's own operating point)
    over: list = field(default_factory=list)  # fixed overrides (none changes a default unless said in `note`)
    note: str = ""


@dataclass
class Panel:
    stem: str                  # results/claims_<stem>.png (one per cost axis: claims_<stem>_<axis>.png)
    world: str                 # shown in titles
    base: list                 # world overrides
    task: str
    metric: str                # quality column
    axes: list                 # cost axes of the plots / read-outs
    series: list
    logy: bool = False


@dataclass
class Claim:
    key: str
    title: str
    claim: str                 # paper and number
    readout: str               # "equal_quality" | "equal_cost" | "inversion"
    reference: str             # label of the claimed solver's series
    rule: str                  # the verdict rule, in words
    panels: list
    ratios: dict = field(default_factory=dict)  # other series label -> claimed cost ratio (equal_quality)
    note: str = ""             # protocol notes (no results)


# ------------------------------------------------------------------------------------------ the worlds

def worlds(tiny: bool, images: dict) -> dict:
    """Overrides per world. --tiny replaces every world by the exact GMM world (pixel or latent), 2 images."""
    if tiny:
        g = ["dataset=gmm", "dataset.n=2", "run.num_samples=4", "metrics.n_ref=64"]
        return {"latent": (["model=gmm_latent", "run.prompt=null", *g], "sw2"),
                "latent_exact": (["model=gmm_latent", "run.prompt=null", *g], "sw2"),
                "pixel": (["model=gmm", *g], "sw2"), "gmm": (["model=gmm", *g], "sw2"),
                "inv_gmm": (["model=gmm", "dataset=gmm", "dataset.n=2", "compute.dtype=float64"], "rt_img_rel"),
                "inv_latent": (["model=gmm_latent", "dataset=gmm", "dataset.n=2", "compute.dtype=float64"], "rt_img_rel")}
    gmm = ["dataset=gmm", "model=gmm", f"dataset.n={images['gmm']}", "run.num_samples=16", "metrics.n_ref=512"]
    return {"latent": (["dataset=digits", "model=digits_latent", "run.prompt=null", f"dataset.n={images['latent']}"], "psnr"),
            "latent_exact": (["dataset=gmm", "model=gmm_latent", "run.prompt=null", f"dataset.n={images['gmm']}",
                              "run.num_samples=16", "metrics.n_ref=512"], "sw2"),
            "pixel": (["dataset=digits", "model=digits", f"dataset.n={images['pixel']}"], "psnr"),
            "gmm": (gmm, "sw2"),
            "inv_gmm": (["dataset=gmm", "model=gmm", f"dataset.n={images['gmm']}", "compute.dtype=float64"], "rt_img_rel"),
            "inv_latent": (["dataset=digits", "model=digits_latent", f"dataset.n={images['latent']}",
                            "compute.dtype=float64"], "rt_img_rel")}


WORLD_NAMES = {"latent": "latent digits (unconditional)", "latent_exact": "exact latent GMM",
               "pixel": "digits pixel DDPM", "gmm": "exact GMM", "inv_gmm": "exact GMM, float64",
               "inv_latent": "latent digits (CFG 2, class prompt), float64"}


def claims(tiny: bool, images: dict) -> list[Claim]:
    W = worlds(tiny, images)

    def g(full, small):  # a budget grid, or its tiny version
        return small if tiny else full

    def panel(stem, world, task, axes, series, logy=False):
        base, metric = W[world]
        name = f"tiny stand-in (exact GMM) for {WORLD_NAMES[world]}" if tiny else WORLD_NAMES[world]
        return Panel(stem, name, base, task, metric, axes, series, logy)

    out = []
    # 1. STSL vs PSLD vs P2L ----------------------------------------------------------------------------
    # CPU budget: PSLD stops at 250 steps and P2L at 100 (their defaults, 1000, cost 4× to 10× the grid;
    # main's results/digits_latent_solvers.md has PSLD at 100 steps already at or above STSL's default point)
    stsl = [Series("STSL", "stsl", g([5, 10, 25, 50], [2, 3]), 50),
            Series("PSLD", "psld", g([25, 50, 100, 250], [2, 4]), 1000),
            Series("P2L", "p2l", g([10, 25, 50, 100], [2, 3]), 1000)]
    stsl_exact = [Series("STSL", "stsl", g([5, 10, 25, 50], [2]), 50),
                  Series("PSLD", "psld", g([25, 50, 100, 250, 1000], [2, 4]), 1000),
                  Series("P2L", "p2l", g([10, 25, 50, 100], [2]), 1000)]
    out.append(Claim(
        "stsl", "STSL vs PSLD vs P2L: NFE at equal quality",
        "STSL (Table 2): 50 steps / 250 NFE against PSLD's 1000 steps / 1000 NFE and P2L's 1000 steps / 2000 NFE at "
        "better LPIPS (Table 1), i.e. about 4× fewer NFE than PSLD and 8× fewer than P2L at equal or better quality.",
        "equal_quality", "STSL",
        "target quality = STSL's at its default 50 steps; reproduced if the other solver needs ≥ 0.75 × the claimed "
        "NFE ratio to reach it (≥ 3× for PSLD, ≥ 6× for P2L) on every panel, not reproduced if it needs no more NFE "
        "than STSL (ratio ≤ 1) on every panel, partly otherwise.",
        [panel("stsl_latent_inpaint_box", "latent", "inpaint_box", ["nfe"], stsl),
         panel("stsl_latent_sr4", "latent", "sr4", ["nfe"], stsl),
         panel("stsl_exact_sr4", "latent_exact", "sr4", ["nfe"], stsl_exact)],
        {"PSLD": 4.0, "P2L": 8.0},
        "STSL runs at its configured λ = 1.0 on both tasks (the λ tuned on validation digits in conf/tuned, which "
        "results/digits_latent_solvers.md uses, is not used here). NFE are counted as the harness counts them (STSL: "
        "11 per step, the probe pair counted as 2; the paper's Table 2 counts 5 per step). On the exact latent world "
        "PSLD's grid includes its default 1000 steps."))
    # 2. Graikos et al. vs PSLD and latent DPS ----------------------------------------------------------
    gr = [Series("Graikos", "graikos", g([5, 10, 20, 50], [2, 3]), 20),
          Series("latent DPS", "dps", g([25, 50, 100, 250], [2, 4]), 1000),
          Series("PSLD", "psld", g([25, 50, 100, 250], [2, 4]), 1000)]
    gr_box = [*gr, Series("Graikos (decoder direction)", "graikos", g([5, 10, 20, 50], [2]), 20,
                          ["solver.direction=decoder"], "not the default (auto = latent-mask direction on inpainting)")]
    out.append(Claim(
        "graikos", "Graikos et al. vs PSLD and DPS: time and VJPs at equal quality",
        "Graikos et al. (fast constrained sampling, v2 Fig. 1): no backpropagation through the denoiser, inpainting in "
        "about 15 s per image against PSLD's 8 min (about 30× faster), at comparable or better quality.",
        "equal_quality", "Graikos",
        "target quality = Graikos's at its default 20 steps; reproduced if PSLD and latent DPS both need more time "
        "and more NFE + UNet VJP than Graikos to reach it on every panel, not reproduced if each needs no more on "
        "every panel, partly otherwise; a solver that never reaches the target within its grid counts for Graikos only "
        "when its largest budget already costs more than Graikos's default (the claimed 30× is read against the measured time ratio, not required).",
        [panel("graikos_latent_inpaint_box", "latent", "inpaint_box", ["sec", "nfe_vjp"], gr_box),
         panel("graikos_latent_sr4", "latent", "sr4", ["sec", "nfe_vjp"], gr)],
        {"PSLD": 30.0, "latent DPS": math.nan},
        "Graikos et al. at defaults: unconditional, no CFG, direction auto (latent-mask direction on inpainting, "
        "decoder direction on SR, which then costs decoder VJPs, column decode_vjp); the decoder-direction variant on "
        "inpainting is shown for comparison and left out of the verdict. Latent DPS runs at its configured scale 0.5."))
    # 3. DSG vs DPS ----------------------------------------------------------------------------------------
    dsg = [Series("DPS", "dps", g([50, 100, 200, 500, 1000], [2, 4]), 1000),
           Series("DSG", "dps_dsg", g([50, 100, 200], [2, 4]), 100)]  # the claim is about small budgets
    out.append(Claim(
        "dsg", "DSG vs DPS: quality at equal NFE",
        "DSG (Yang et al., ICML 2024): adding the spherical Gaussian constraint to DPS gives better quality at the same "
        "DDIM budget (1000/100/50/20 steps), with the largest gains at small budgets (the paper's table values were "
        "not retrieved; see docs/solvers.md).",
        "equal_cost", "DSG",
        "at each NFE of the common grid, the paired per-image difference DSG − DPS; reproduced if DSG is better beyond "
        "its 95% interval at every common NFE ≤ 200 on every panel, not reproduced if it is nowhere better beyond the "
        "interval, partly otherwise.",
        [panel("dsg_pixel_inpaint_box", "pixel", "inpaint_box", ["nfe"], dsg),
         panel("dsg_pixel_sr4", "pixel", "sr4", ["nfe"], dsg),
         panel("dsg_gmm_inpaint_box", "gmm", "inpaint_box", ["nfe"], dsg),
         panel("dsg_gmm_sr4", "gmm", "sr4", ["nfe"], dsg)]))
    # 4. BDIA vs EDICT vs null-text ---------------------------------------------------------------------
    inv = [Series("BDIA", "bdia", g([5, 10, 20, 50], [2, 3]), 50),
           Series("EDICT", "edict", g([5, 10, 20, 50], [2, 3]), 50),
           Series("null-text", "null_text", g([5, 10, 20, 50], [2]), 50),
           Series("DDIM inversion", "ddim_inversion", g([5, 10, 20, 50, 100], [2, 3]), 50)]
    out.append(Claim(
        "bdia", "BDIA vs EDICT vs null-text inversion: round-trip error vs NFE",
        "BDIA (Zhang et al., ECCV 2024): exact diffusion inversion like EDICT, at the cost of DDIM (EDICT's two "
        "coupled chains need 2× the NFE), where null-text inversion is an approximate per-step optimisation.",
        "inversion", "BDIA",
        "exact = relative round-trip error below 1e-10 in float64; reproduced if BDIA is exact at every step count "
        "with at most 0.6 × EDICT's NFE, and null-text is not exact; partly if only some hold; not reproduced if "
        "BDIA is not exact.",
        [panel("bdia_gmm", "inv_gmm", "inversion", ["nfe"], [x for x in inv if x.label != "null-text"], logy=True),
         panel("bdia_latent", "inv_latent", "inversion", ["nfe"], inv, logy=True)]))
    # 5. RED-diff vs DPS ----------------------------------------------------------------------------------
    red = [Series("RED-diff", "reddiff", g([25, 50, 100, 250, 1000], [2, 4]), 50),  # DPS: the DSG claim's cells
           Series("DPS", "dps", g([50, 100, 200, 500, 1000], [2, 4]), 1000)]
    out.append(Claim(
        "reddiff", "RED-diff vs DPS: time at equal quality",
        "RED-diff (Mardani et al., ICLR 2024): comparable or better quality than DPS at a fraction of its time "
        "(no backpropagation through the network; Table 1 values were not retrieved).",
        "equal_quality", "RED-diff",
        "target quality = RED-diff's at its default 50 steps; reproduced if DPS needs more time to reach it on every "
        "panel (on both axes), not reproduced if it needs no more on every panel, partly otherwise.",
        [panel("reddiff_pixel_inpaint_box", "pixel", "inpaint_box", ["sec", "nfe"], red),
         panel("reddiff_pixel_sr4", "pixel", "sr4", ["sec", "nfe"], red),
         panel("reddiff_gmm_inpaint_box", "gmm", "inpaint_box", ["sec", "nfe"], red),
         panel("reddiff_gmm_sr4", "gmm", "sr4", ["sec", "nfe"], red)],
        {"DPS": math.nan},
        "RED-diff at its configured λ 0.25, lr 0.1 (the tuned values of conf/tuned are not used); the DPS points are "
        "the DSG claim's cells."))
    return out


# ---------------------------------------------------------------------------------------------- running

def cell_args(p: Panel, s: Series, steps: int, common: list) -> list:
    return [*common, *p.base, f"task={p.task}", f"solver={s.solver}", *s.over, f"solver.steps={steps}"]


def run_panel(p: Panel, common: list, compute: bool) -> dict:
    """{(series label, steps): run name}; runs (or resumes) every cell when `compute`."""
    from harness.cli import compose
    from harness.runner import run_cell, run_name

    names = {}
    for s in p.series:
        for k in s.steps:
            cfg = compose(cell_args(p, s, k, common))
            names[(s.label, k)] = run_cell(cfg)["run"] if compute else run_name(cfg)
            if compute:
                print(f"{p.stem}: {s.label} steps={k} done", flush=True)
    return names


# --------------------------------------------------------------------------------------------- read-outs

def cost_at(points: list, q: float, higher: bool) -> tuple[float, str]:
    """(cost, kind) at which the curve [(cost, quality)] sorted by cost first reaches quality q:
    kind '=' interpolated (linear in log cost), '≤' reached at the smallest budget, '>' never reached."""
    ok = (lambda v: v >= q) if higher else (lambda v: v <= q)
    for i, (c, v) in enumerate(points):
        if ok(v):
            if i == 0:
                return c, "≤"
            c0, v0 = points[i - 1]
            f = (q - v0) / (v - v0) if v != v0 else 1.0
            return math.exp(math.log(c0) + f * (math.log(c) - math.log(c0))), "="
    return points[-1][0], ">"


def fmt_cost(c: float, kind: str) -> str:
    return ("" if kind == "=" else kind) + f"{c:.3g}"


def fmt_ratio(num: tuple, den: tuple) -> str:
    """Ratio of two read-out costs with its bound direction: '>' / '<' when either side is a bound."""
    (a, ka), (b, kb) = num, den
    r = a / b if b > 0 else math.nan
    lower = ka == ">" or kb == "≤"       # a is at least a, b at most b: ratio at least
    upper = ka == "≤" or kb == ">"
    if lower and upper:
        return "?"
    return ("≥" if lower else "≤" if upper else "") + f"{r:.2g}×"


def panel_data(root: str, p: Panel, names: dict, metrics: list):
    """(world frame, table, {label: series}) of one panel's runs, through harness.report.build."""
    from harness import report

    df = report.load_leaderboard(root)
    runs = set(names.values())
    missing = runs - set(df["run"])
    if missing:
        raise ConfigError(f"{len(missing)} cell(s) of {p.stem} have not run under {root} (e.g. {sorted(missing)[0]}); "
                          f"run benchmarks/claims.py without --report-only first.")
    _, ws = report.build(root, metrics, None, 2000, df=df[df["run"].isin(runs)].reset_index(drop=True))
    if len(ws) != 1:
        raise ConfigError(f"the runs of {p.stem} fall into {len(ws)} worlds, not one; their protocols differ.")
    w, t, _, _ = ws[0]
    by_run = {r: lab for lab, r in zip(w["label"], w["run"])}
    labels = {}
    for (sl, k), r in names.items():
        labels.setdefault(sl, {})[k] = by_run[r]
    return w, t, labels


def curve(w, t, labels: dict, metric: str, axis: str) -> list:
    """[(cost, quality, lo, hi, steps)] of one series, sorted by cost."""
    from harness import report

    pts = []
    for k, lab in labels.items():
        c = t["cells"][(lab, metric)]
        pts.append((report.cost_of(w[w["label"] == lab], axis), c["mean"], c["lo"], c["hi"], k))
    return sorted(pts)


def points_table(w, t, p: Panel, labels: dict) -> str:
    from harness import report

    cols = [c for c in ("nfe", "vjp", "decode_vjp", "sec_per_sample") if c in w]
    rows = []
    for s in p.series:
        for k in s.steps:
            lab = labels[s.label][k]
            r = w[w["label"] == lab].iloc[0]
            c = t["cells"][(lab, p.metric)]
            q = report.fmt(c["mean"]) + (f" [{report.fmt(c['lo'])}, {report.fmt(c['hi'])}]" if math.isfinite(c["lo"]) else "")
            rows.append([s.label, k, q, *(report.fmt(float(r[col])) for col in cols)])
    return report.markdown_table(["solver", "steps", f"{p.metric} [95% CI]", *cols], rows)


def plot(w, t, p: Panel, axis: str, out_dir: str) -> str:
    from harness import report

    path = os.path.join(out_dir, f"claims_{p.stem}_{axis}.png")
    title = f"{p.world} × {p.task}, {w['n_images'].iloc[0]} test images"
    report.quality_vs_cost(w, t, p.metric, axis, path, title, logy=p.logy)
    return path


def equal_quality(c: Claim, p: Panel, w, t, labels: dict, higher: bool) -> tuple[list, list]:
    """Read-out rows and per-(other, axis) (ratio bounds) for the verdict."""
    ref = next(s for s in p.series if s.label == c.reference)
    rows, judged = [], []
    for axis in p.axes:
        curves = {s.label: [(x, q) for x, q, _, _, _ in curve(w, t, labels[s.label], p.metric, axis)] for s in p.series}
        at = {k: (x, q) for x, q, _, _, k in curve(w, t, labels[ref.label], p.metric, axis)}
        own, q_ref = (at[ref.default][0], "="), at[ref.default][1]  # the claimed operating point: its default budget
        for s in p.series:
            if s.label == ref.label or s.note:
                continue
            other = cost_at(curves[s.label], q_ref, higher)
            rows.append([COST_NAMES[axis], f"{q_ref:.4g} ({ref.label} at {ref.default} steps)", s.label,
                         fmt_cost(*own), fmt_cost(*other), fmt_ratio(other, own)])
            judged.append((axis, s.label, other, own))
            # the highest quality both curves reach (information; the verdict uses the row above)
            best = (min if higher else max)((max if higher else min)(q for _, q in curves[n]) for n in (ref.label, s.label))
            a, b = cost_at(curves[s.label], best, higher), cost_at(curves[ref.label], best, higher)
            rows.append([COST_NAMES[axis], f"{best:.4g} (highest both reach)", s.label, fmt_cost(*b), fmt_cost(*a),
                         fmt_ratio(a, b)])
    return rows, judged


def quality_at_equal_cost(c: Claim, p: Panel, root: str, w, t, labels: dict) -> tuple[list, list]:
    from harness import report

    ref = next(s for s in p.series if s.label == c.reference)
    other = next(s for s in p.series if s.label != c.reference)
    ca = {k: (x, q, lo, hi) for x, q, lo, hi, k in curve(w, t, labels[ref.label], p.metric, "nfe")}
    cb = {k: (x, q, lo, hi) for x, q, lo, hi, k in curve(w, t, labels[other.label], p.metric, "nfe")}
    rows, judged = [], []
    higher = report.higher_better(p.metric)
    for k in sorted(set(ca) & set(cb)):
        ra = w[w["label"] == labels[ref.label][k]]["run"].iloc[0]
        rb = w[w["label"] == labels[other.label][k]]["run"].iloc[0]
        ia = report.per_image(root, ra).groupby("image_id")[p.metric].mean()
        ib = report.per_image(root, rb).groupby("image_id")[p.metric].mean()
        d, lo, hi, n = report.paired_difference(ia, ib)
        better = (lo > 0) if higher else (hi < 0)
        worse = (hi < 0) if higher else (lo > 0)
        rows.append([f"{ca[k][0]:.3g}", k, f"{cb[k][1]:.4g}", f"{ca[k][1]:.4g}", f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]",
                     "better" if better else "worse" if worse else "within noise"])
        judged.append((ca[k][0], better, worse))
    return rows, judged


def inversion_rows(p: Panel, w, t, labels: dict) -> tuple[list, dict]:
    rows, by = [], {}
    for s in p.series:
        for x, q, _, _, k in curve(w, t, labels[s.label], p.metric, "nfe"):
            r = w[w["label"] == labels[s.label][k]].iloc[0]
            extra = [f"{float(r[c]):.2e}" if c in w and math.isfinite(float(r[c])) else ""
                     for c in ("rt_img_rel", "rt_img_maxabs", "rt_lat_rel", "rt_lat_maxabs")]
            rows.append([s.label, k, f"{x:.3g}", *extra])
            by.setdefault(s.label, {})[k] = (x, q)
    return rows, by


def ratio_call(other: tuple, own: tuple, need: float) -> str:
    """'yes' (the other needs ≥ `need` × the reference's cost), 'no' (it needs no more: ratio ≤ 1) or 'part'
    (in between, or a bound that cannot decide), from the read-out costs and their bound kinds."""
    (a, ka), (b, kb) = other, own
    r = a / b if b > 0 else math.nan
    lower = ka == ">" or kb == "≤"
    upper = ka == "≤" or kb == ">"
    if lower and upper or not math.isfinite(r):
        return "part"
    if lower:
        return "yes" if r >= need else "part"
    if upper:
        return "no" if r <= 1 else "part"
    return "yes" if r >= need else "no" if r <= 1 else "part"


def verdict_equal_quality(c: Claim, judged_all: list) -> str:
    """STSL: need 0.75 × the claimed ratio; the others: any saving (ratio > 1, `need` just above 1)."""
    per = [ratio_call(other, own, 0.75 * c.ratios[lab] if c.key == "stsl" else 1.0 + 1e-9)
           for _, lab, other, own in judged_all]
    if all(v == "yes" for v in per):
        return "reproduced"
    if all(v == "no" for v in per):
        return "not reproduced here"
    return "partly"


def verdict_equal_cost(judged_all: list) -> str:
    small = [(better, worse) for x, better, worse in judged_all if x <= 200]
    if small and all(b for b, _ in small):
        return "reproduced"
    if not any(b for _, b, _ in judged_all):
        return "not reproduced here"
    return "partly"


def verdict_inversion(by_panel: list) -> str:
    exact, cheap, nt_inexact = [], [], []
    for by in by_panel:
        for k, (x, q) in by["BDIA"].items():
            exact.append(q < 1e-10)
            if k in by["EDICT"]:
                cheap.append(x <= 0.6 * by["EDICT"][k][0])
        nt_inexact += [q >= 1e-10 for _, q in by.get("null-text", {}).values()]  # latent priors only
    if not all(exact):
        return "not reproduced here"
    return "reproduced" if all(cheap) and all(nt_inexact) else "partly"


# ---------------------------------------------------------------------------------------------- report

HEAD = """# Seed papers' headline claims against quality-vs-cost curves measured here

Written by `{command}` (benchmarks/claims.py). **Small worlds only**: the exact GMM world, the shipped 16-px digits
pixel DDPM and the latent digits world (tiny VAE + latent UNet); no FFHQ/ImageNet/Stable Diffusion checkpoint is on
this machine, so no claim is tested at the papers' scale, and a verdict says what these worlds show, not whether a
paper is right at 256/512 px. Every point is one cell at the solver's **configured defaults except the swept budget**
(`solver.steps`), on the **test split** ({images}); nothing was tuned on these images (the step sizes tuned on
validation in conf/tuned are *not* used here: every series is at its defaults, one labelled variant aside). Seeds: 0 only.
Times are CPU seconds per reconstruction (`sec_per_sample`, wall time of the batch over its reconstructions, one
thread, on 2 cores shared with other jobs whose load changed during the runs), so they are noisy, by enough that a
solver's time is sometimes not monotone in its budget (a read-out on the time axis then inherits that noise; the NFE
read-outs do not), and small-batch times differ from large-batch ones.

Read-outs. *Cost at equal quality*: the target is the claimed solver's quality at its default budget, and its cost
there is the claimed operating point's; the other solver's cost is the cost at which its curve first reaches the
target (a second row: the highest quality both curves reach, both costs read the same way), linearly
interpolated between the two budgets around the crossing in log(cost) against quality; "≤ c": the smallest budget
of the grid already reaches it (the true cost may be lower), "> c": no budget of the grid does; ratios carry the
bound ("≥", "≤"), and the interpolated costs have no interval of their own (the points' 95% bootstrap intervals
over images are in the plots and tables). *Quality at equal cost*: the measured points at the same NFE, with the
paired per-image difference and its 95% bootstrap interval. Plots: harness.report.quality_vs_cost (one line per
solver along its budget, bootstrap 95% intervals, dashed Pareto front; legends name solver configs: `dps` on a
latent prior is latent DPS, `dps_dsg` is DSG). Verdicts apply the rule stated with each claim to these read-outs.
Budget grids are bounded by this machine (2 shared CPU cores): where a grid stops below a solver's configured
default (PSLD and P2L default to 1000 steps, DPS on the latent world too), the tables say so by the steps shown,
and a target it never reaches within its grid is a bound ("> c"), not a measured cost.
"""


def write_report(root: str, out: str, cls: list, names: dict, command: str, images: str):
    from core.files import atomic_write_text
    from harness import report

    out_dir = os.path.dirname(out) or "."
    text = [HEAD.format(command=command, images=images)]
    for c in cls:
        text += [f"## {c.title}", "", f"**Claim.** {c.claim}", "", f"**Rule.** {c.rule}", ""]
        if c.note:
            text += [f"**Protocol.** {c.note}", ""]
        judged_all, inv_by = [], []
        for p in c.panels:
            metrics = [p.metric]
            w, t, labels = panel_data(root, p, names[(c.key, p.stem)], metrics)
            text += [f"### {p.world} × {p.task} ({int(w['n_images'].iloc[0])} test images; {p.metric}, "
                     f"{'higher' if report.higher_better(p.metric) else 'lower'} is better)", ""]
            notes = [f"{s.label}: {s.note}" for s in p.series if s.note]
            if notes:
                text += ["Variant: " + "; ".join(notes) + ".", ""]
            for axis in p.axes:
                path = plot(w, t, p, axis, out_dir)
                text += [f"![{p.stem} {axis}]({os.path.relpath(path, out_dir)})", ""]
            if c.readout == "inversion":
                rows, by = inversion_rows(p, w, t, labels)
                inv_by.append(by)
                text.append(report.markdown_table(["method", "steps", "NFE", "rt_img_rel", "rt_img_maxabs",
                                                   "rt_lat_rel", "rt_lat_maxabs"], rows))
                if any(r[5] for r in rows):
                    text += ["", "rt_img_rel = ‖x̂ − D(E(x))‖/‖D(E(x))‖ is the inversion's own error (the curve); "
                             "rt_lat_rel compares E(x̂) with E(x), so on a latent prior it also carries the VAE's "
                             "re-encoding error E(D(z)) ≠ z, the same for every method that round-trips z exactly.", ""]
                continue
            text += [points_table(w, t, p, labels), ""]
            if c.readout == "equal_quality":
                rows, judged = equal_quality(c, p, w, t, labels, report.higher_better(p.metric))
                judged_all += judged
                text.append(report.markdown_table(["cost", "target quality", "other", f"{c.reference} cost",
                                                   "other's cost", "other / " + c.reference], rows))
            else:
                rows, judged = quality_at_equal_cost(c, p, root, w, t, labels)
                judged_all += judged
                other = next(s.label for s in p.series if s.label != c.reference)
                text.append(report.markdown_table(["NFE", "steps", other, c.reference,
                                                   f"{c.reference} − {other} [95% CI]", f"{c.reference} vs {other}"], rows))
        v = (verdict_equal_quality(c, judged_all) if c.readout == "equal_quality" else
             verdict_equal_cost(judged_all) if c.readout == "equal_cost" else verdict_inversion(inv_by))
        text += ["", f"**Verdict: {v}** (by the rule above; small worlds, see the top of this file).", ""]
    atomic_write_text(out, "\n".join(text).rstrip() + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Quality-vs-cost curves for the seed papers' claims; writes results/claims.md.")
    ap.add_argument("--tiny", action="store_true", help="every world replaced by the exact GMM world, 2 images, "
                                                        "tiny budgets (a test of the code path, in seconds)")
    ap.add_argument("--claims", default="stsl,graikos,dsg,bdia,reddiff", help="comma-separated claim keys")
    ap.add_argument("--root", help="run folders (default results/runs/claims, or results/runs/claims_tiny)")
    ap.add_argument("--out", help="markdown file; plots go next to it (default results/claims.md)")
    ap.add_argument("--no-report", action="store_true", help="only run the cells")
    ap.add_argument("--report-only", action="store_true", help="only write the report from finished cells")
    ap.add_argument("--latent-images", type=int, default=4)
    ap.add_argument("--pixel-images", type=int, default=4)
    ap.add_argument("--gmm-images", type=int, default=8)
    a = ap.parse_args(argv)
    images = {"latent": a.latent_images, "pixel": a.pixel_images, "gmm": a.gmm_images}
    cls = claims(a.tiny, images)
    want = [k for k in a.claims.split(",") if k]
    unknown = [k for k in want if k not in {c.key for c in cls}]
    if unknown:
        raise ConfigError(f"unknown claim {unknown[0]!r}; --claims takes {','.join(c.key for c in cls)}.")
    if a.no_report and a.report_only:
        raise ConfigError("--no-report and --report-only exclude each other; give one.")
    cls = sorted((c for c in cls if c.key in want), key=lambda c: want.index(c.key))  # run in the order given
    if a.tiny:  # the code path of every claim and read-out, not every panel
        for c in cls:
            c.panels = c.panels[:1] if c.readout != "inversion" else c.panels[::-1]
            for p in c.panels:
                for s in p.series:
                    s.default = s.steps[-1]  # the tiny grids do not hold the configured defaults
    root = a.root or ("results/runs/claims_tiny" if a.tiny else "results/runs/claims")
    out = a.out or "results/claims.md"
    common = [f"run.root={root}", f"run.leaderboard={root}/leaderboard.csv", "run.progress=false", "run.grid_images=0"]
    names = {(c.key, p.stem): run_panel(p, common, not a.report_only) for c in cls for p in c.panels}
    if a.no_report:
        return 0
    desc = ("tiny: exact GMM world, 2 images, 4 samples" if a.tiny else
            f"latent digits {a.latent_images} images, digits pixel {a.pixel_images} images (DPS at 1000 steps costs "
            f"about 20 s per digits image here), exact GMM {a.gmm_images} measurements × 16 posterior samples")
    command = "python benchmarks/claims.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_report(root, out, cls, names, command.strip(), desc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
