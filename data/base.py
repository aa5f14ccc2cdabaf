"""Datasets yield (id, image in [-1,1] of shape [C,H,W], caption or None), by explicit ids."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import torch


class Dataset:
    name = "dataset"
    split = "test"

    def __init__(self, ids):
        self.ids = list(ids)

    def __len__(self):
        return len(self.ids)

    def load(self, image_id) -> tuple[torch.Tensor, str | None]:
        raise NotImplementedError

    def batch(self, ids) -> tuple[torch.Tensor, list]:
        return self._stack([self.load(i) for i in ids])

    @staticmethod
    def _stack(items) -> tuple[torch.Tensor, list]:
        return torch.stack([im for im, _ in items]), [c for _, c in items]

    def batches(self, id_lists: Sequence[Sequence], workers: int = 0) -> Iterator[tuple[torch.Tensor, list]]:
        """`batch(ids)` for each list in turn. With workers > 0 (compute.num_workers), a pool of that many
        threads decodes the images of the next batch while the caller works on the current one (decoding
        and resizing release the GIL); an image that fails to decode raises its error when its batch is
        reached, as `batch` would. Threads, not processes: nothing is pickled and a CUDA parent is safe."""
        if workers <= 0:
            for ids in id_lists:
                yield self.batch(ids)
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        try:
            submit = lambda ids: [pool.submit(self.load, i) for i in ids]  # noqa: E731
            ahead = submit(id_lists[0]) if len(id_lists) else None
            for k in range(len(id_lists)):
                current, ahead = ahead, submit(id_lists[k + 1]) if k + 1 < len(id_lists) else None
                yield self._stack([f.result() for f in current])
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict:
        return {"dataset": self.name, "split": self.split}
