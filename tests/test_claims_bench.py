"""benchmarks/claims.py: the --tiny run writes every claim's section, plots and verdict; the read-outs
(interpolated cost at equal quality, bounds, verdict calls) checked against hand-computed values; bad input."""
import importlib.util
import math
import os
import subprocess
import sys

import pytest

from core.files import REPO_ROOT as ROOT

SCRIPT = os.path.join(ROOT, "benchmarks", "claims.py")


def load():
    spec = importlib.util.spec_from_file_location("claims_bench", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_cost_at_interpolates_in_log_cost_and_marks_bounds():
    c = load()
    pts = [(10.0, 20.0), (100.0, 22.0), (1000.0, 23.0)]  # psnr, higher is better
    cost, kind = c.cost_at(pts, 21.0, higher=True)   # halfway between 20 and 22: geometric mean of 10 and 100
    assert kind == "=" and cost == pytest.approx(math.sqrt(10 * 100))
    assert c.cost_at(pts, 19.0, higher=True) == (10.0, "≤")
    assert c.cost_at(pts, 24.0, higher=True) == (1000.0, ">")
    low = [(10.0, 0.3), (100.0, 0.1)]  # sw2, lower is better: 0.2 is halfway
    assert c.cost_at(low, 0.2, higher=False)[0] == pytest.approx(math.sqrt(1000))
    # first crossing on a non-monotone curve
    assert c.cost_at([(10.0, 20.0), (100.0, 23.0), (1000.0, 21.0)], 22.0, True)[0] == pytest.approx(10 ** (1 + 2 / 3))


def test_ratio_calls_respect_bounds():
    c = load()
    assert c.ratio_call((400.0, "="), (100.0, "="), 3.0) == "yes"
    assert c.ratio_call((200.0, "="), (100.0, "="), 3.0) == "part"
    assert c.ratio_call((90.0, "="), (100.0, "="), 3.0) == "no"
    assert c.ratio_call((25.0, "≤"), (100.0, "="), 3.0) == "no"     # reached at its smallest budget: at most 0.25×
    assert c.ratio_call((250.0, ">"), (100.0, "="), 3.0) == "part"  # never reached, grid stops at 2.5×: undecided
    assert c.ratio_call((1000.0, ">"), (100.0, "="), 3.0) == "yes"
    assert c.fmt_ratio((25.0, "≤"), (100.0, "=")) == "≤0.25×"
    assert c.fmt_ratio((1000.0, ">"), (100.0, "=")) == "≥10×"


def test_tiny_run_writes_every_claim_with_plots_and_verdicts(tmp_path):
    out, root = tmp_path / "claims.md", tmp_path / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, SCRIPT, "--tiny", "--out", str(out), "--root", str(root)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    for title in ("STSL vs PSLD vs P2L", "Graikos et al. vs PSLD and DPS", "DSG vs DPS", "BDIA vs EDICT vs null-text",
                  "RED-diff vs DPS"):
        assert f"## {title}" in text
    verdicts = [line for line in text.splitlines() if line.startswith("**Verdict: ")]
    assert len(verdicts) == 5
    assert all(any(v.startswith(f"**Verdict: {w}**") for w in ("reproduced", "partly", "not reproduced here"))
               for v in verdicts)
    pngs = sorted(p.name for p in tmp_path.glob("claims_*.png"))
    linked = sorted(line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("!["))
    assert pngs == linked and len(pngs) >= 8
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    # BDIA on the exact GMM world in float64 round-trips to float precision; DDIM inversion does not
    section = text.split("exact GMM, float64")[1]
    bdia = [line for line in section.splitlines() if line.startswith("| BDIA |")]
    ddim = [line for line in section.splitlines() if line.startswith("| DDIM inversion |")]
    assert bdia and all(float(line.split("|")[4]) < 1e-10 for line in bdia)
    assert ddim and all(float(line.split("|")[4]) > 1e-3 for line in ddim)
    assert "**Verdict: reproduced**" in text.split("## BDIA")[1].split("## RED-diff")[0]


def test_unknown_claim_is_one_sentence_exit_2(tmp_path):
    r = subprocess.run([sys.executable, SCRIPT, "--tiny", "--claims", "nope", "--root", str(tmp_path / "r"),
                        "--out", str(tmp_path / "c.md")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "unknown claim 'nope'" in r.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "c.md").exists()
