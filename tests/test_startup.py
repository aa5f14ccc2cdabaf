"""Startup cost: the modules on run.py's path to the first solver step import no heavy library they do not
need there (results/startup.md has the measured CPU seconds), and the digits world reads scikit-learn's
bundled file without importing scikit-learn, giving the same arrays bit for bit."""
import json
import os
import subprocess
import sys

from core.files import REPO_ROOT

HEAVY = ("sklearn", "pandas", "matplotlib", "scipy", "torchmetrics")
# A library a run-path module may still import at its top, with the module: none (harness/records.py imports
# pandas lazily, and a fresh cell's done_ids reads no parts).
ALLOWED_IMPORTER: dict[str, str] = {}

PROBE = r"""
import builtins, json, sys, traceback
first = {}
real_import = builtins.__import__
HEAVY = %r

def spy(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.split(".")[0]
    if level == 0 and top in HEAVY and top not in sys.modules and top not in first:
        stack = [f.filename for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename]
        first[top] = stack[-1] if stack else "?"
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = spy
import harness.cli, harness.validate, harness.runner, models.gmm, data.digits  # what run.py imports before a solve
from models.gmm import fit_digits_mixture
from types import SimpleNamespace
from data.digits import DigitsDataset
fit_digits_mixture(16, 32, 1e-3)  # the gmm prior, fitted on the digits
ds = DigitsDataset(SimpleNamespace(image_shape=(1, 16, 16), name="probe"), n=2)
ds.batch(ds.ids)  # the digits dataset's images
import tempfile
from harness.records import RunDir
assert RunDir(tempfile.mkdtemp(), "cell").done_ids() == set()  # a fresh cell's resume check
print(json.dumps({top: first.get(top) for top in HEAVY if top in sys.modules}))
"""


def test_the_run_path_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,)], cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    imported = json.loads(out.stdout.strip().splitlines()[-1])
    wrong = {top: where for top, where in imported.items()
             if not (where and where.replace("\\", "/").endswith(ALLOWED_IMPORTER.get(top, "\0")))}
    assert not wrong, f"imported before the first solver step (library: first importer): {wrong}"


def test_the_digits_are_scikit_learns_bit_for_bit():
    from sklearn.datasets import load_digits as sklearn_digits

    from core.digits import load_digits

    images, target = load_digits()
    ref = sklearn_digits()
    assert images.dtype == ref.images.dtype and images.shape == ref.images.shape == (1797, 8, 8)
    assert target.dtype == ref.target.dtype and target.shape == ref.target.shape == (1797,)
    assert images.tobytes() == ref.images.tobytes() and target.tobytes() == ref.target.tobytes()
    assert not images.flags.writeable  # one cached array shared by every caller: nobody may change it


def test_the_digits_file_is_found_without_importing_scikit_learn():
    probe = ("import sys; from core.digits import digits_file, load_digits; "
             "load_digits(); print(digits_file().endswith('digits.csv.gz'), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"], out.stderr
