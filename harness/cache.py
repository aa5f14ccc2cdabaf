"""Frozen measurements: masks, kernels and noise drawn once per (task config, image, seed), stored.

Every solver of a sweep reads the same bytes. The key hashes the task's config, the seed, the
dataset as the cell's identity names it (its config less locations, and its fingerprint: never a path,
so a moved data folder reuses its measurements), the image id and the image's own bytes (so a changed
image cannot be paired with a stale y). Measurements are made on the CPU in float32.

Each file holds the sha256 of its tensors' bytes; a file that cannot be loaded or does not match it is
reported in one sentence, moved into `measurements/corrupt/` and drawn again (the draw is a function of
the key, so the redrawn measurement is the same).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import torch

from core.files import atomic_save
from core.rng import generator


def digest(item: dict) -> str:
    h = hashlib.sha256()
    for name, t in [("y", item["y"]), *sorted(item["params"].items())]:
        h.update(name.encode())
        if not torch.is_tensor(t):
            h.update(repr(t).encode())
            continue
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                 else t.float().numpy().tobytes())
    return h.hexdigest()


def load_checked(path: str) -> dict | None:
    """The cached item at `path`, None if absent; a damaged file is moved aside (one sentence) -> None."""
    if not os.path.exists(path):
        return None
    try:
        item = torch.load(path, weights_only=True)
        if not (isinstance(item, dict) and isinstance(item.get("params"), dict) and torch.is_tensor(item.get("y"))):
            raise ValueError("not a measurement")
        if "sha256" in item and digest(item) != item["sha256"]:  # files written before checksums: loadable is enough
            raise ValueError("checksum mismatch")
        return item
    except Exception as e:  # noqa: BLE001 - any failure to load is a damaged file: it is set aside and redrawn
        folder = os.path.join(os.path.dirname(path), "corrupt")
        os.makedirs(folder, exist_ok=True)
        dest = os.path.join(folder, f"{os.path.basename(path)}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        try:
            os.replace(path, dest)
        except FileNotFoundError:  # another process set it aside first
            return None
        how = "does not match its checksum" if str(e) == "checksum mismatch" else f"cannot be loaded ({type(e).__name__})"
        print(f"warning: measurement cache file {path} {how}; moved to {dest}, it is drawn again.", file=sys.stderr)
        return None


class MeasurementCache:
    def __init__(self, root: str, task_config: dict, dataset_key: dict, seed: int):
        """`dataset_key`: what identifies the dataset, without locations (the runner passes its cell key's
        dataset part: config less paths, plus the dataset fingerprint), so a moved data folder keeps its keys."""
        self.dir = os.path.join(root, "measurements")
        os.makedirs(self.dir, exist_ok=True)
        self.dataset = dataset_key
        self.prefix = json.dumps({"task": task_config, "dataset": dataset_key, "seed": seed}, sort_keys=True,
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
            item = load_checked(path)
            if item is None:
                p = task.draw([image_id], self.seed)
                y = task.bind(p).measure(x[None].float().cpu(), [generator(self.seed, "noise", image_id)])
                item = {"params": p, "y": y}
                item["sha256"] = digest(item)
                atomic_save(item, path)
            params.append(item["params"])
            ys.append(item["y"])
            keys.append(key)
        batched = {k: torch.cat([p[k] for p in params]) for k in params[0]} if params else {}
        return batched, torch.cat(ys), keys
