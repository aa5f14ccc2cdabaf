"""Results on disk: one folder per cell, rows written atomically, resumable, and the leaderboard.

results/runs/<run>/
    config.yaml        the resolved config of the cell
    parts/<k>.csv      per-image rows of one finished batch (written to a temp file, then renamed:
                       a batch is either wholly recorded or absent, so a killed run loses no row
                       and duplicates none)
    recon/<k>.pt       the reconstructions of that batch (written before its rows)
    images.csv         all per-image rows, one per image, rebuilt from parts at the end
    summary.csv        the cell's summary row (also upserted into the leaderboard)
    grid.png           measurement / reconstruction / truth
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import os
import re
import subprocess

import pandas as pd
import torch

from harness.cache import atomic_save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def atomic_write_text(path: str, text: str):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_csv(path: str, df: pd.DataFrame):
    atomic_write_text(path, df.to_csv(index=False))


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout this code runs from, '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(folder: str, prefix: str = ""):
    """Delete `<prefix>*.tmp<pid>*` files left by writers killed mid-write (their pid is gone)."""
    for p in glob.glob(os.path.join(folder, glob.escape(prefix) + "*.tmp*")):
        m = re.search(r"\.tmp(\d+)", os.path.basename(p))
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


class RunDir:
    def __init__(self, root: str, name: str):
        self.path = os.path.join(root, name)
        self.name = name
        for sub in ("parts", "recon"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        for sub in ("", "parts", "recon"):
            remove_stale_tmp(os.path.join(self.path, sub))

    def file(self, *parts) -> str:
        return os.path.join(self.path, *parts)

    def read_parts(self) -> pd.DataFrame:
        frames = [pd.read_csv(p, dtype={"image_id": str}) for p in sorted(glob.glob(self.file("parts", "*.csv")))]
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates("image_id", keep="last")

    def done_ids(self) -> set[str]:
        df = self.read_parts()
        return set(df["image_id"]) if len(df) else set()

    def write_batch(self, rows: list[dict], recon: dict):
        key = hashlib.sha256(",".join(str(r["image_id"]) for r in rows).encode()).hexdigest()[:16]
        atomic_save(recon, self.file("recon", f"{key}.pt"))
        atomic_write_csv(self.file("parts", f"{key}.csv"), pd.DataFrame(rows))

    def reconstructions(self) -> dict[str, torch.Tensor]:
        """image id -> its first reconstruction, from every batch whose rows were recorded (a batch killed
        between its reconstructions and its rows is recomputed, so its orphan file is ignored)."""
        out = {}
        for p in sorted(glob.glob(self.file("recon", "*.pt"))):
            if not os.path.exists(self.file("parts", os.path.basename(p)[:-3] + ".csv")):
                continue
            item = torch.load(p, weights_only=True)
            out.update({str(i): x for i, x in zip(item["ids"], item["x_hat"])})
        return out


@contextlib.contextmanager
def locked(path: str):
    with open(path + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def upsert_leaderboard(path: str, row: dict):
    """Replace this run's row (or add it), under a file lock, with an atomic rewrite."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with locked(path):
        remove_stale_tmp(os.path.dirname(os.path.abspath(path)), os.path.basename(path))  # we hold the lock
        old = pd.read_csv(path, dtype={"run": str}) if os.path.exists(path) else pd.DataFrame()
        if len(old):
            old = old[old["run"] != row["run"]]
        new = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old) else pd.DataFrame([row])
        atomic_write_csv(path, new)
