"""Frozen measurements: masks, kernels and noise drawn once per (task config, image, seed), stored.

Every solver of a sweep reads the same bytes. The key hashes the task's config, the seed, the
dataset's description, the image id and the image's own bytes (so a changed image cannot be
paired with a stale y). Measurements are made on the CPU in float32.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

from tasks.rng import generator


def atomic_save(obj, path: str):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class MeasurementCache:
    def __init__(self, root: str, task_config: dict, dataset_desc: dict, seed: int):
        self.dir = os.path.join(root, "measurements")
        os.makedirs(self.dir, exist_ok=True)
        self.prefix = json.dumps({"task": task_config, "dataset": dataset_desc, "seed": seed}, sort_keys=True,
                                 default=str)
        self.seed = seed

    def key(self, image_id, image: torch.Tensor) -> str:
        h = hashlib.sha256(self.prefix.encode())
        h.update(str(image_id).encode())
        h.update(image.detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:20]

    def measure(self, task, images: torch.Tensor, ids) -> tuple[dict, torch.Tensor, list[str]]:
        """Batched (params, y, keys) for these images, from the cache or drawn and stored."""
        params, ys, keys = [], [], []
        for image_id, x in zip(ids, images):
            key = self.key(image_id, x)
            path = os.path.join(self.dir, f"{key}.pt")
            if os.path.exists(path):
                item = torch.load(path, weights_only=True)
            else:
                p = task.draw([image_id], self.seed)
                y = task.bind(p).measure(x[None].float().cpu(), [generator(self.seed, "noise", image_id)])
                item = {"params": p, "y": y}
                atomic_save(item, path)
            params.append(item["params"])
            ys.append(item["y"])
            keys.append(key)
        batched = {k: torch.cat([p[k] for p in params]) for k in params[0]} if params else {}
        return batched, torch.cat(ys), keys
