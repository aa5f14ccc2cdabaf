"""benchmarks/gpu_throughput.py --tiny runs on the CPU and writes only its --out table."""
import os
import subprocess
import sys

from harness.cli import REPO_ROOT


def test_gpu_throughput_tiny_writes_its_table_only(tmp_path):
    out = tmp_path / "sub" / "gpu.md"
    work = tmp_path / "work"
    work.mkdir()
    before = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    r = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "benchmarks", "gpu_throughput.py"), "--tiny",
                        "--device", "cpu", "--out", str(out), "--workdir", str(work)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| adm") or ln.startswith("| sd")]
    # every solver at batch 1 and 2, each with a positive time and images/hour
    assert sorted((ln.split("|")[2].strip(), ln.split("|")[3].strip()) for ln in rows) == sorted(
        (s, b) for s in ("dps", "ddrm", "daps", "psld") for b in ("1", "2"))
    for ln in rows:
        cells = [c.strip() for c in ln.split("|")]
        assert float(cells[7]) > 0 and float(cells[9]) > 0
    assert os.listdir(work) == []  # the random weights' temporary folder is gone
    after = subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert after == before  # nothing in the repository was written
