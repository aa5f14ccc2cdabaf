"""scikit-learn's bundled 8×8 digits (1797 images), read without importing scikit-learn.

The file `sklearn/datasets/data/digits.csv.gz` ships inside the scikit-learn wheel (no download): one row
per image, 64 pixel counts in 0..16 then the label. `sklearn.datasets.load_digits()` parses it with
`numpy.loadtxt(..., delimiter=",")` and reshapes; importing scikit-learn for that costs ~1.7 CPU-s at
every start (scipy.stats and more), so the file is located with `importlib.util.find_spec`, which finds a
package's folder without running its `__init__`, and parsed the same way. `load_digits()` here returns the
same arrays, bit for bit (tests/test_digits_data.py pins it). Ids into these arrays are the ids of the
digits dataset (data/digits.py) and the classes of the gmm prior (models/gmm.py).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os

from core.errors import ConfigError

RELATIVE = ("datasets", "data", "digits.csv.gz")


def digits_file() -> str:
    """The path of scikit-learn's bundled digits.csv.gz (scikit-learn is located, not imported)."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, *RELATIVE)
        if os.path.isfile(path):
            return path
    raise ConfigError("the digits world reads scikit-learn's bundled digits.csv.gz, which was not found; "
                      "install scikit-learn (pip install scikit-learn).")


@functools.lru_cache(maxsize=1)
def load_digits():
    """(images [1797, 8, 8] float64 counts 0..16, target [1797] int64): `sklearn.datasets.load_digits()`'s
    `images` and `target`. Read-only arrays: every caller shares them."""
    import numpy as np

    with gzip.open(digits_file(), mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    images = data[:, :-1].reshape(-1, 8, 8)
    target = data[:, -1].astype(int, copy=False)
    images.flags.writeable = False
    target.flags.writeable = False
    return images, target
