"""No config or code file cites a repository file that does not exist (docs, configs, modules, results)."""
import glob
import os
import re

from harness.cli import REPO_ROOT

CITED = re.compile(r"(?<![\w./-])((?:docs|conf|solvers|tasks|harness|metrics|models|data|benchmarks|tests|results)"
                   r"/[\w./-]*\w\.(?:md|py|yaml|txt|csv))")
SOURCES = ["conf/**/*.yaml", "solvers/*.py", "tasks/*.py", "harness/*.py", "metrics/*.py", "models/*.py",
           "data/*.py", "benchmarks/*.py", "run.py", "sweep.py", "README.md", "docs/*.md"]


# where runs write (settings, not citations): the git-ignored run folders, caches and views, and the table
# the GPU benchmark writes when a GPU run is made (absent until then)
OUTPUTS = ("results/runs/", "results/cache/", "results/sweeps/", "results/reports/", "results/leaderboard.csv",
           "results/gpu_throughput.md")


def cited_paths():
    for pattern in SOURCES:
        for path in glob.glob(os.path.join(REPO_ROOT, pattern), recursive=True):
            text = open(path, encoding="utf-8").read()
            for m in CITED.finditer(text):
                if not m.group(1).startswith(OUTPUTS):
                    yield os.path.relpath(path, REPO_ROOT), m.group(1)


def test_every_cited_repository_file_exists():
    missing = sorted({(src, ref) for src, ref in cited_paths() if not os.path.exists(os.path.join(REPO_ROOT, ref))})
    assert not missing, missing


def test_the_docs_the_presets_cite_exist():
    refs = {ref for src, ref in cited_paths() if src.startswith("conf/experiment/")}
    assert {"docs/protocols.md", "docs/solvers.md"} <= refs
