"""compute.num_workers: images of the next batch are decoded by a thread pool while the current one is solved."""
import threading

import pytest
import torch

from data.base import Dataset
from core.errors import ConfigError
from tests.test_digits_data import fake_prior, folder, png

WAIT = 10.0  # seconds; only reached when the behaviour is missing


class Recording(Dataset):
    """Loads record which ids were decoded, by which thread; `gate` lets a test hold a decode."""

    def __init__(self, n, fail=None):
        super().__init__(range(n))
        self.loaded, self.threads, self.fail = [], set(), fail
        self.started = {i: threading.Event() for i in range(n)}
        self.barrier = None

    def load(self, i):
        self.started[i].set()
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait(WAIT)  # passes only if the batch's images are decoded concurrently
        if i == self.fail:
            raise ConfigError(f"image {i} cannot be decoded")
        self.loaded.append(i)
        return torch.full((1, 2, 2), float(i)), f"c{i}"


def split(ids, k):
    return [ids[s: s + k] for s in range(0, len(ids), k)]


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_are_the_batches_in_order(workers):
    ds = Recording(7)
    lists = split(ds.ids, 3)
    got = list(ds.batches(lists, workers))
    assert len(got) == 3
    for ids, (x, caps) in zip(lists, got):
        ref_x, ref_caps = Recording(7).batch(ids)
        assert torch.equal(x, ref_x) and caps == ref_caps == [f"c{i}" for i in ids]


def test_the_next_batch_is_decoded_while_the_current_one_is_used():
    ds = Recording(4)
    it = ds.batches(split(ds.ids, 2), workers=2)
    next(it)  # batch 0 handed to the solver ...
    # ... and batch 1 decodes meanwhile, without the caller asking for it
    assert ds.started[2].wait(WAIT) and ds.started[3].wait(WAIT)
    x, _ = next(it)
    assert x[:, 0, 0, 0].tolist() == [2.0, 3.0]
    assert all(t.startswith("decode") for t in ds.threads)


def test_workers_decode_one_batch_in_parallel():
    ds = Recording(2)
    ds.barrier = threading.Barrier(2)  # both loads of the batch must be in flight at once
    (x, _), = ds.batches([[0, 1]], workers=2)
    assert x.shape == (2, 1, 2, 2)


def test_no_workers_decodes_in_the_callers_thread_on_demand():
    ds = Recording(4)
    it = ds.batches(split(ds.ids, 2), workers=0)
    next(it)
    assert ds.loaded == [0, 1] and ds.threads == {threading.current_thread().name}


def test_a_decode_error_surfaces_at_its_batch():
    ds = Recording(4, fail=3)
    it = ds.batches(split(ds.ids, 2), workers=2)
    next(it)
    with pytest.raises(ConfigError, match="image 3 cannot be decoded"):
        next(it)


def test_image_folder_prefetch_equals_synchronous_decode(tmp_path):
    for i in range(5):
        png(tmp_path / f"{i}.png", 20, 24)
    ds = folder(tmp_path, fake_prior(), pattern="{id}.png", id_range=[0, 5])
    lists = split(ds.ids, 2)
    for ids, (x, caps) in zip(lists, ds.batches(lists, workers=3)):
        ref, ref_caps = ds.batch(ids)
        assert torch.equal(x, ref) and caps == ref_caps


def test_a_cell_with_workers_gives_the_rows_of_a_cell_without(make_cfg, tmp_path):
    import pandas as pd

    from harness.runner import run_cell

    out = []
    for w in (0, 2):
        cfg = make_cfg("solver=ddim", "solver.steps=2", "dataset.n=3", "compute.batch_size=1",
                       f"compute.num_workers={w}", root=tmp_path / f"w{w}")
        s = run_cell(cfg)
        out.append(pd.read_csv(f"{tmp_path}/w{w}/runs/{s['run']}/images.csv"))
    assert out[0]["psnr"].tolist() == out[1]["psnr"].tolist() and len(out[0]) == 3
