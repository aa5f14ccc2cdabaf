"""Results on disk: one folder per cell, rows written atomically, verified when read, and the leaderboard.

results/runs/<run>/
    cell.json          the cell's identity (what its run name hashes; see README "What defines a cell")
    config.yaml        the resolved config of the cell
    parts/<k>.csv      per-image rows of one finished batch (written to a temp file, then renamed:
                       a batch is either wholly recorded or absent, so a killed run loses no row
                       and duplicates none)
    recon/<k>.pt       the reconstructions of that batch (written before its rows)
    images.csv         all per-image rows, one per image, rebuilt from parts at the end
    summary.csv        the cell's summary row (also upserted into the leaderboard)
    grid.png           measurement / reconstruction / truth
    corrupt/           files that failed verification, moved aside (never deleted)

Integrity: every file the harness reads back (cell.json, config.yaml, parts, recon, summary.csv, the
leaderboard) has a sidecar `<file>.sha256` holding the sha256 of its bytes, written (atomically) before
the file itself (see `write_checked`), so a file without a matching checksum is damaged, not merely
interrupted. A file that fails is
reported in one sentence on stderr, moved into `corrupt/`, and what it held is recomputed. The
leaderboard is a view of the run folders: it is checked (structure, and its checksum when it has one)
before any compute, upserted under a lock, and rebuilt from the run folders by `rebuild_leaderboard`.

The leaderboard is two files: the verified table `<leaderboard>` (CSV, checksum sidecar, written only by
the one atomic write) and its append-only journal `<leaderboard>.journal`, one record per line: 16 hex
digits of the sha256 of the record's JSON, a space, the JSON of the row. An upsert appends one record
(fsynced) and touches nothing else, O(1) in the number of rows. The journal is folded into the table
(a run's last row wins, as one rewrite after another would leave it) when the table is small
(`COMPACT_BELOW`, 256 KiB: every committed table, every test; the file then always holds every row),
when the journal has grown to the table's size (geometric: O(1) amortised per upsert), and whenever the
table is read through `read_leaderboard` or rebuilt by `rebuild_leaderboard` (`sweep.py --aggregate`),
so every reader sees table + journal as one view. A killed writer leaves at most a torn last record:
it fails its checksum, the next append starts on a new line, and the fold drops it with one `warning:`
sentence and moves the journal (every byte of it) aside; a record is never half-kept. A crash between
the table's write and the journal's removal folds the same records again, which changes nothing.

Shared cluster filesystems. All writers serialise on `fcntl.flock(<leaderboard>.lock)` and open the
journal after taking it. Local disks: exact. NFS: Linux emulates flock with POSIX byte-range locks over
NLM (v3, needs lockd/statd on client and server) or the v4 protocol's own locks; with a working lock
manager the lock is coherent across nodes, close-to-open consistency gives the appender the current
size, and O_APPEND lands at the end; without one (v3 mounted `nolock`, or `local_lock=flock`) the lock
is node-local, and two nodes appending at once can overwrite each other's record (O_APPEND is not atomic
across NFS clients): a partly overwritten record fails its checksum and is dropped with a warning, never
kept wrong; one overwritten whole is gone from the journal without a trace. Either way its run folder
still holds it, and `sweep.py --aggregate` restores the row. Lustre: coherent only
when mounted with `-o flock`; `localflock` is node-local (the same failure story as NFS without a lock
manager); `noflock` makes flock fail (an OSError on the first upsert). The run folders are the source of
truth in every case: keep the leaderboard on a local disk when in doubt and rebuild it with
`python sweep.py --aggregate`. (No SQLite: its WAL mode needs shared memory between processes, which
does not work across the nodes of a network filesystem, and its rollback journal relies on the same
POSIX locks, so it would not improve the story and would add a binary file to the results.)
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import glob
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time

from core.errors import ConfigError
from core.files import HOST, REPO_ROOT, atomic_write_bytes, atomic_write_text

SUM = ".sha256"
# per-image columns that hold text even when it looks like a number (class names as prompts, ids)
STRING_COLUMNS = ("run", "image_id", "image_ids", "prompt", "status", "measurement_key", "timestamp", "git_commit")


class Corrupt(Exception):
    """A file that fails verification; the message says how (empty, no checksum, checksum mismatch...)."""


def atomic_write_csv(path: str, df: pd.DataFrame):
    atomic_write_text(path, df.to_csv(index=False))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checked(path: str, data: bytes | str):
    """Write `path` atomically with its checksum sidecar. The sidecar is written first and, while the file is
    replaced, lists both the old and the new checksum: killed anywhere, the file verifies (old or new
    content), while a file damaged later does not."""
    data = data.encode() if isinstance(data, str) else data
    new = sha256(data)
    try:
        with open(path, "rb") as f:
            old = sha256(f.read())
    except FileNotFoundError:
        old = None
    atomic_write_text(path + SUM, new + "\n" + (f"{old}\n" if old and old != new else ""))
    atomic_write_bytes(path, data)
    if old and old != new:
        atomic_write_text(path + SUM, new + "\n")


def read_checked(path: str) -> bytes:
    """The bytes of `path` if they match its checksum sidecar, else Corrupt(how)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise Corrupt("is empty")
    try:
        with open(path + SUM) as f:
            want = f.read().split()
    except FileNotFoundError:
        raise Corrupt("has no checksum file (written by an older version, or damaged)") from None
    except (OSError, UnicodeDecodeError):
        raise Corrupt("has an unreadable checksum file") from None
    if sha256(data) not in want:
        raise Corrupt(f"does not match its checksum ({len(data)} bytes: truncated or overwritten)")
    return data


def read_csv_bytes(data: bytes, strings=STRING_COLUMNS) -> pd.DataFrame:
    import pandas as pd

    head = pd.read_csv(io.BytesIO(data), nrows=0).columns
    return pd.read_csv(io.BytesIO(data), dtype={c: str for c in strings if c in head}, keep_default_na=True)


def move_aside(path: str, folder: str, how: str, consequence: str, also=()) -> str:
    """Move a file that failed verification (with its checksum, and the files `also` that go with it) into
    `folder`; one sentence on stderr."""
    os.makedirs(folder, exist_ok=True)
    stamp = f"corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    dest = os.path.join(folder, f"{os.path.basename(path)}.{stamp}")
    for src in (path, *also):
        for f in (src, src + SUM):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f, os.path.join(folder, f"{os.path.basename(f)}.{stamp}"))
    with_ = f" (with {', '.join(os.path.basename(a) for a in also)})" if also else ""
    print(f"warning: {path} {how}; moved to {dest}{with_}, {consequence}.", file=sys.stderr)
    return dest


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout this code runs from, '+dirty' when tracked files differ; 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
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
    """Delete `<prefix>*.tmp<pid>.<host>` files left by writers of this host killed mid-write (their pid is
    gone); another host's (a shard on another node of a shared filesystem) are left alone."""
    for p in glob.glob(os.path.join(folder, glob.escape(prefix) + "*.tmp*")):
        m = re.search(r"\.tmp(\d+)(?:\.([^.]+))?$", os.path.basename(p))
        if m and m.group(2) not in (None, HOST):
            continue
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(p)


def key_diff(old, new, prefix="") -> list[str]:
    """The dotted keys where two identities differ, as `key (old vs new)`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += key_diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1]} ({old} in the folder vs {new})"]


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

    def set_aside(self, path: str, how: str, consequence: str, also=()):
        return move_aside(path, self.file("corrupt"), how, consequence, also)

    # -- the cell's identity and config ------------------------------------------------------------
    def claim(self, key: dict, config_yaml: str):
        """Write (or check) cell.json and config.yaml. A folder made by another cell (possible only with an
        explicit run.name) is refused; damaged files are moved aside and rewritten."""
        text = json.dumps(key, sort_keys=True, indent=1, default=str)
        for f in ("cell.json", "config.yaml", "summary.csv"):
            if os.path.exists(self.file(f)):
                try:
                    data = read_checked(self.file(f))
                    if f == "cell.json" and json.loads(data) != json.loads(text):
                        diff = ", ".join(key_diff(json.loads(data), json.loads(text))[:3])
                        raise ConfigError(f"run folder {self.path} holds another cell (its cell.json differs from "
                                          f"this config's identity: {diff}); a shard must have the cell's settings, "
                                          "otherwise choose another run.name or run.root.")
                    if f == "summary.csv":
                        read_csv_bytes(data)
                except (Corrupt, ValueError, UnicodeDecodeError) as e:
                    if isinstance(e, ConfigError):
                        raise
                    how = str(e) if isinstance(e, Corrupt) else "cannot be parsed"
                    self.set_aside(self.file(f), how, "it is rewritten" if f != "summary.csv"
                                   else "it is rewritten from the recorded images")
        for f, content in (("cell.json", text), ("config.yaml", config_yaml)):
            try:  # unchanged files are not rewritten: shards of one cell claim it at the same time
                if read_checked(self.file(f)) == content.encode():
                    continue
            except (FileNotFoundError, Corrupt):
                pass
            write_checked(self.file(f), content)

    # -- batches -----------------------------------------------------------------------------------
    def _parts(self) -> dict[str, pd.DataFrame]:
        """key -> rows of every recorded batch whose rows and reconstructions verify; the others are moved
        aside, rows and reconstructions together, and their images are recomputed."""
        out = {}
        for p in sorted(glob.glob(self.file("parts", "*.csv"))):
            key = os.path.basename(p)[:-4]
            rec = self.file("recon", f"{key}.pt")
            try:
                df = read_csv_bytes(read_checked(p))
                if not len(df) or "status" not in df or df["status"].isna().any() or hashlib.sha256(
                        ",".join(df["image_id"].astype(str)).encode()).hexdigest()[:16] != key:
                    raise Corrupt("does not hold the rows its name promises")
            except (Corrupt, ValueError, KeyError, UnicodeDecodeError) as e:
                self.set_aside(p, str(e) if isinstance(e, Corrupt) else "cannot be parsed",
                               "its images are recomputed", also=[rec] if os.path.exists(rec) else [])
                continue
            try:
                read_checked(rec)
            except (FileNotFoundError, Corrupt) as e:
                if isinstance(e, Corrupt):
                    self.set_aside(rec, str(e), f"its batch's {len(df)} image(s) are recomputed", also=[p])
                else:
                    self.set_aside(p, f"has no reconstructions (recon/{key}.pt is missing)", "its images are recomputed")
                continue
            out[key] = df
        return out

    def read_parts(self) -> pd.DataFrame:
        import pandas as pd

        frames = list(self._parts().values())
        if not frames:
            return pd.DataFrame()
        df = pd.concat(frames, ignore_index=True)
        return df.drop_duplicates("image_id", keep="last")

    def done_ids(self) -> set[str]:
        if not glob.glob(self.file("parts", "*.csv")):  # a fresh cell: no pandas before the first solve
            return set()
        df = self.read_parts()
        return set(df["image_id"]) if len(df) else set()

    def write_batch(self, rows: list[dict], recon: dict):
        """Reconstructions first, then the rows: a batch counts as recorded once its rows file exists."""
        import pandas as pd
        import torch

        key = hashlib.sha256(",".join(str(r["image_id"]) for r in rows).encode()).hexdigest()[:16]
        buf = io.BytesIO()
        torch.save(recon, buf)
        write_checked(self.file("recon", f"{key}.pt"), buf.getvalue())
        write_checked(self.file("parts", f"{key}.csv"), pd.DataFrame(rows).to_csv(index=False))

    def reconstructions(self) -> dict[str, torch.Tensor]:
        """image id -> its first reconstruction, from every batch whose rows were recorded (a batch killed
        between its reconstructions and its rows is recomputed, so its orphan file is ignored)."""
        import torch

        out = {}
        for key in self._parts():
            item = torch.load(io.BytesIO(read_checked(self.file("recon", f"{key}.pt"))), weights_only=True)
            out.update({str(i): x for i, x in zip(item["ids"], item["x_hat"])})
        return out

    def write_summary(self, df: pd.DataFrame):
        write_checked(self.file("summary.csv"), df.to_csv(index=False))


@contextlib.contextmanager
def locked(path: str):
    with open(path + ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- the leaderboard: a verified table and its append-only journal (see the module docstring) -------------

JOURNAL = ".journal"
COMPACT_BELOW = 256 * 1024  # bytes: a table smaller than this takes each journal row at once (stays complete)
_VERIFIED: dict[str, tuple] = {}  # abspath -> stat signature of a table (and its checksum) this process verified


def journal_of(path: str) -> str:
    return path + JOURNAL


def _plain(v):
    """A summary value JSON cannot hold (numpy or torch scalar, anything else) as a Python number, or text."""
    if hasattr(v, "item"):
        with contextlib.suppress(TypeError, ValueError):
            return v.item()
    return str(v)


def _journal_line(row: dict) -> bytes:
    """One self-checking journal record: the first 16 hex digits of the sha256 of its JSON, a space, the JSON."""
    payload = json.dumps(row, default=_plain, separators=(",", ":"), allow_nan=True).encode()
    return sha256(payload)[:16].encode() + b" " + payload + b"\n"


def _append_journal(path: str, row: dict) -> int:
    """Append `row` to the journal (the caller holds the lock), fsynced; returns the journal's size. Only
    O(1) bytes are touched: the row and the journal's last byte (a torn line left by a killed writer gets
    a newline first, so the new record stays a line of its own and the torn one is dropped when read)."""
    line = _journal_line(row)
    with open(journal_of(path), "a+b") as f:  # O_APPEND: every write goes to the end
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                line = b"\n" + line
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    return end + len(line)


def _read_journal(path: str) -> tuple[list[dict], list[int]]:
    """(rows in the order written, numbers of the lines that fail their checksum: torn or damaged)."""
    try:
        with open(journal_of(path), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], []
    rows, bad = [], []
    for k, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        digest, _, payload = line.partition(b" ")
        try:
            if sha256(payload)[:16].encode() != digest:
                raise ValueError
            row = json.loads(payload)
            if not isinstance(row, dict) or "run" not in row:
                raise ValueError
        except ValueError:  # json's decode errors are ValueErrors
            bad.append(k)
            continue
        rows.append(row)
    return rows, bad


def _consume_journal(path: str, rows: list, bad: list):
    """After its rows are in the table: remove the journal, or, when some of its lines failed, move it aside
    (one warning sentence; the file keeps every byte) so nothing damaged is silently kept or lost."""
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        move_aside(journal_of(path), os.path.dirname(os.path.abspath(path)),
                   f"has a torn or damaged line (line {bad[0]}{more}: cut short by a killed process, or overwritten)",
                   f"that line dropped and its {len(rows)} intact row(s) kept in {os.path.basename(path)} (rerun the "
                   f"cell whose row was cut, or rebuild with python sweep.py --aggregate, to restore it)")
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(journal_of(path))


def _signature(path: str):
    try:
        a, b = os.stat(path), os.stat(path + SUM)
    except FileNotFoundError:
        return None
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns, b.st_ino, b.st_size, b.st_mtime_ns)


def _remember(path: str):
    """The table as this process just wrote (or verified) it needs no second check in this process."""
    sig = _signature(path)
    if sig is not None:
        _VERIFIED[os.path.abspath(path)] = sig


def _known_good(path: str) -> bool:
    """Whether the table is one this process verified or wrote, unchanged since (see `_remember`)."""
    sig = _signature(path)
    return sig is not None and _VERIFIED.get(os.path.abspath(path)) == sig


def _leaderboard_problem(path: str) -> str | None:
    """Why the leaderboard at `path` cannot be trusted, or None (also None when it does not exist)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be read ({e.__class__.__name__})"
    if os.path.exists(path + SUM):
        try:
            read_checked(path)
        except Corrupt as e:
            return str(e)
        if data.endswith(b"\n") and data.startswith(b"run,"):
            return None  # our own complete write (its checksum matches): no need to parse every row
    if not data.strip():
        return "is empty"
    try:
        rows = list(csv.reader(io.StringIO(data.decode())))
    except (UnicodeDecodeError, csv.Error):
        return "is not a CSV text file"
    if not rows or "run" not in rows[0]:
        return "has no 'run' column"
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != len(rows[0])]
    if bad or not data.endswith(b"\n"):
        return f"has an incomplete row (line {bad[0] if bad else len(rows)})"
    return None


def check_leaderboard(path: str):
    """Before any compute: a leaderboard that cannot be read is one sentence, not a traceback after the run.
    A table this process already verified (or wrote), unchanged since (inode, size, mtime, ctime, checksum
    file), is not read again, so a sweep's cells in one process do not each re-hash the whole table."""
    if _known_good(path):
        return
    why = _leaderboard_problem(path)
    if why:
        _VERIFIED.pop(os.path.abspath(path), None)
        raise ConfigError(f"leaderboard {path} {why}; move it aside, or rebuild it from the run folders with "
                          f"python sweep.py --aggregate --leaderboard {path}.")
    _remember(path)


def _read_leaderboard(path: str) -> pd.DataFrame:
    import pandas as pd

    return read_csv_bytes(open(path, "rb").read()) if os.path.exists(path) else pd.DataFrame()


def _write_leaderboard(path: str, df: pd.DataFrame):
    write_checked(path, df.to_csv(index=False))


def _csv_line(values) -> bytes:
    """One CSV line as pandas' to_csv writes it (missing values empty)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if v is None or (isinstance(v, float) and v != v) else v for v in values])
    return buf.getvalue().encode()


def _append_rows(path: str, rows: list[dict]) -> bool:
    """The fast fold: new runs (none in the table, each once) whose columns are the table's own (every cell
    of a world) are appended as CSV lines, as pandas' rewrite writes them, without parsing the table (its
    bytes are verified against the checksum, in C). False otherwise (the pandas fold then)."""
    try:
        data = read_checked(path)
    except (FileNotFoundError, Corrupt):
        return False
    header = next(csv.reader([data[: data.find(b"\n")].decode()]))
    runs = [_csv_line([r["run"]]).rstrip(b"\n") for r in rows]
    if (len(header) < 2 or header[0] != "run" or not data.endswith(b"\n") or len(set(runs)) != len(runs)
            or any(set(header) != set(r) for r in rows) or any(run[:1] == b'"' for run in runs)):
        return False
    # the first field of every line (a superset of the table's runs: a quoted newline makes extra lines, whose
    # false hits only send the rows to the pandas fold): one pass, not one search of the table per row
    if not {line.partition(b",")[0] for line in data.split(b"\n")}.isdisjoint(runs):
        return False
    write_checked(path, data + b"".join(_csv_line([r[c] for c in header]) for r in rows))
    return True


def _fold(old: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """The table after upserting `rows` in order: a run's last row wins and goes after the rows of runs it
    did not touch (as one upsert after another would leave it); every column of either is kept."""
    import pandas as pd

    new = pd.DataFrame(rows).drop_duplicates("run", keep="last")
    if not len(old):
        return new.reset_index(drop=True)
    kept = old[~old["run"].isin(set(new["run"]))]
    if not len(kept):
        return new.reindex(columns=[*old.columns, *(c for c in new.columns if c not in old.columns)]).reset_index(drop=True)
    return pd.concat([kept, new], ignore_index=True)


def _compact(path: str):
    """Fold the journal into the table and remove it (the caller holds the lock and has checked the table)."""
    rows, bad = _read_journal(path)
    if rows and not _append_rows(path, rows):
        _write_leaderboard(path, _fold(_read_leaderboard(path), rows))
    _consume_journal(path, rows, bad)
    _remember(path)


def upsert_leaderboard(path: str, row: dict):
    """Record this run's row (replacing its earlier one in the view), under the lock: appended to the journal,
    O(1) in the number of rows. The journal is folded into the table when the table is small (under
    COMPACT_BELOW bytes, so small tables stay complete files) or when the journal has grown to the table's
    size (so the table at least grows by a constant factor between folds: O(1) amortised), and by readers."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with locked(path):
        remove_stale_tmp(os.path.dirname(os.path.abspath(path)), os.path.basename(path))  # we hold the lock
        size = _append_journal(path, row)
        table = os.path.getsize(path) if os.path.exists(path) else 0
        if table >= COMPACT_BELOW and size < table:
            return
        why = None if _known_good(path) else _leaderboard_problem(path)  # the fold below re-reads it anyway
        if why:  # the row is safe in the journal; the next cell's check refuses the table in one sentence
            print(f"warning: leaderboard {path} {why}; this run's row is kept in {journal_of(path)} and folded "
                  f"in when the leaderboard is rebuilt (python sweep.py --aggregate --leaderboard {path}).",
                  file=sys.stderr)
            return
        _compact(path)


def read_leaderboard(path: str) -> pd.DataFrame:
    """The leaderboard as one view: the table with its journal folded in (compacted, under the lock). A table
    that cannot be read is one sentence (ConfigError) naming the rebuild."""
    import pandas as pd

    if not os.path.exists(path) and not os.path.exists(journal_of(path)):
        return pd.DataFrame()
    with locked(path):
        check_leaderboard(path)
        if os.path.exists(journal_of(path)):
            _compact(path)
        return _read_leaderboard(path)


def _summary_row(data: bytes) -> tuple[bytes, bytes]:
    """(header line, row line) of a summary file's bytes: one header with a `run` column and one row of as
    many fields, else Corrupt (checked with the csv module, not by a pandas parse per file)."""
    rows = [r for r in csv.reader(io.StringIO(data.decode())) if r]
    if len(rows) != 2 or "run" not in rows[0] or len(rows[1]) != len(rows[0]):
        raise Corrupt(f"holds {max(len(rows) - 1, 0)} rows, not one summary row")
    cut = data.index(b"\n") + 1
    return data[:cut], data[cut:] if data.endswith(b"\n") else data[cut:] + b"\n"


def read_summaries(roots) -> pd.DataFrame:
    """The summary row of every finished run under `roots` (run folders are the source of truth); a summary
    that fails verification is moved aside (rerunning its cell rewrites it). Linear in the number of runs:
    each file is verified on its own, then the rows of the files that share a header are parsed by one
    read_csv (as one file: the same types a parse per file and a concat give), in the files' order."""
    import pandas as pd

    groups, n = {}, 0  # header line -> [(position, row line)]
    for root in roots:
        for f in sorted(glob.glob(os.path.join(root, "*", "summary.csv"))):
            try:
                if os.path.exists(f + SUM):
                    data = read_checked(f)
                else:  # written before checksums: a complete CSV is accepted
                    why = _leaderboard_problem(f)
                    if why:
                        raise Corrupt(why)
                    data = open(f, "rb").read()
                head, row = _summary_row(data)
            except (Corrupt, ValueError, UnicodeDecodeError, csv.Error) as e:
                move_aside(f, os.path.join(os.path.dirname(f), "corrupt"),
                           str(e) if isinstance(e, Corrupt) else "cannot be parsed",
                           "rerun its cell to rewrite it (its leaderboard row, if any, is kept)")
                continue
            # a header with a quote could hide a newline: such a file is parsed as a group of its own
            groups.setdefault(head if b'"' not in head else (head, n), []).append((n, row))
            n += 1
    frames = []
    for head, items in groups.items():
        head = head if isinstance(head, bytes) else head[0]
        df = read_csv_bytes(head + b"".join(r for _, r in items))
        if len(df) != len(items):
            raise ValueError(f"{len(items)} summary rows parsed as {len(df)}")  # not reachable from verified files
        df.index = [k for k, _ in items]
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    return (frames[0] if len(frames) == 1 else pd.concat(frames)).sort_index().reset_index(drop=True)


def rebuild_leaderboard(roots, path: str, prune: bool = False, summaries: pd.DataFrame | None = None) -> pd.DataFrame:
    """The leaderboard at `path` rebuilt from the run folders under `roots`, by union: a run read here
    replaces its row, rows of runs not read (the table's and its journal's) are kept (dropped with
    `prune=True`). Under the upsert lock, written atomically, the journal folded in; returns the table. A
    damaged table is moved aside and rebuilt. `summaries`: the rows of `read_summaries(roots)`, if read already."""
    import pandas as pd

    roots = [roots] if isinstance(roots, str) else list(roots)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with locked(path):
        remove_stale_tmp(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
        why = _leaderboard_problem(path)
        if why:
            move_aside(path, os.path.dirname(os.path.abspath(path)), why,
                       "the leaderboard is rebuilt from its journal and the run folders only")
        rows, bad = _read_journal(path)
        old = _read_leaderboard(path)
        if rows:
            old = _fold(old, rows)
        new = read_summaries(roots) if summaries is None else summaries
        if len(old) and not prune:
            kept = old[~old["run"].isin(set(new["run"]) if len(new) else set())]
            new = pd.concat([kept, new], ignore_index=True) if len(new) else kept
        if len(new):
            _write_leaderboard(path, new)
            _consume_journal(path, rows, bad)
            _remember(path)
        return new
