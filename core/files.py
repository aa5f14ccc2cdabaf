"""The repository root and the one way files are written: atomically (a temp file in the same folder,
flushed and fsynced, then renamed over the target), so a reader sees the old file or the new one, never
a part of either, even after a kill or a power loss."""
from __future__ import annotations

import os
import socket

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = socket.gethostname().split(".")[0].replace("/", "_") or "host"


def _replace(path: str, write):
    tmp = f"{path}.tmp{os.getpid()}.{HOST}"  # the host: shards on other nodes' temp files are never reaped
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_bytes(path: str, data: bytes):
    _replace(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str):
    atomic_write_bytes(path, text.encode())


def atomic_save(obj, path: str):
    """torch.save, atomically."""
    import torch

    _replace(path, lambda f: torch.save(obj, f))


def atomic_savez(path: str, **arrays):
    """numpy.savez, atomically."""
    import numpy as np

    _replace(path, lambda f: np.savez(f, **arrays))
