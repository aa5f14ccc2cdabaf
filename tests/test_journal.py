"""The leaderboard's journal: an upsert appends one self-checking record (O(1): the table is neither read
nor rewritten), the journal is folded into the verified table geometrically and by every reader, a torn
record is dropped with one warning, concurrent writers lose and duplicate nothing, and the fold equals a
rebuild from the run folders."""
import builtins
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from core.files import REPO_ROOT as ROOT
from harness import records


def row(i: int, **kw) -> dict:
    r = {"run": f"cell_{i}", "solver": "dps", "params": '{"a": 1, "b": "x, \\"y\\""}', "n_ok": 16, "flag": i % 2 == 0,
         "psnr": 20.0 + i / 3, "fid": math.nan if i % 5 == 2 else 1.5, "pad": "p" * 200}
    return {**r, **kw}


def table_of(path: str, n: int):
    """A verified table of n rows (folded), so that later upserts go to the journal (COMPACT_BELOW=0)."""
    records._write_leaderboard(path, pd.DataFrame([row(i) for i in range(n)]))


def lines(path: str) -> list[bytes]:
    with open(records.journal_of(path), "rb") as f:
        return f.read().splitlines()


def test_an_upsert_appends_to_the_journal_and_never_reads_or_rewrites_the_table(tmp_path, monkeypatch):
    lb = str(tmp_path / "lb.csv")
    table_of(lb, 200)
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    before = os.stat(lb)
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(records, "open", lambda f, *a, **k: (opened.append((os.path.abspath(f), a[0] if a else k.get("mode", "r"))),
                                                             real_open(f, *a, **k))[1], raising=False)
    for i in range(200, 220):
        records.upsert_leaderboard(lb, row(i))
    assert {f for f, _ in opened} == {os.path.abspath(lb + ".lock"), os.path.abspath(records.journal_of(lb))}
    assert {m for f, m in opened if f.endswith(".journal")} == {"a+b"}  # appended, never read back by an upsert
    after = os.stat(lb)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert len(lines(lb)) == 20
    monkeypatch.setattr(records, "open", real_open)
    view = records.read_leaderboard(lb)  # a reader folds the journal in
    assert list(view["run"]) == [f"cell_{i}" for i in range(220)] and not os.path.exists(records.journal_of(lb))
    records.read_checked(lb)


def test_folds_are_geometric_so_an_upsert_is_constant_amortised(tmp_path, monkeypatch):
    lb = str(tmp_path / "lb.csv")
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    folds = []
    real = records._compact
    monkeypatch.setattr(records, "_compact", lambda p: (folds.append(os.path.getsize(p) if os.path.exists(p) else 0),
                                                        real(p)))
    n = 400
    for i in range(n):
        records.upsert_leaderboard(lb, row(i))
    # each fold happens once the journal has reached the table's size: the table grows by a constant factor
    assert len(folds) <= 2 * math.log2(n) and all(b >= 1.3 * a for a, b in zip(folds[1:], folds[2:]))
    assert sum(folds) < 4 * os.path.getsize(lb)  # the bytes folded over all upserts: O(final size)
    assert list(records.read_leaderboard(lb)["run"]) == [f"cell_{i}" for i in range(n)]


def test_a_torn_record_is_dropped_with_one_warning_and_the_others_kept(tmp_path, monkeypatch, capfd):
    lb = str(tmp_path / "lb.csv")
    table_of(lb, 50)
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    for i in (50, 51):
        records.upsert_leaderboard(lb, row(i))
    whole = records._journal_line(row(52))
    with open(records.journal_of(lb), "ab") as f:  # a writer killed mid-record
        f.write(whole[: len(whole) // 2])
    records.upsert_leaderboard(lb, row(53))  # the next record starts on a line of its own
    assert len(lines(lb)) == 4
    capfd.readouterr()
    view = records.read_leaderboard(lb)
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and err[0].startswith(f"warning: {records.journal_of(lb)} has a torn or damaged line (line 3")
    assert "its 3 intact row(s) kept" in err[0]
    assert list(view["run"]) == [f"cell_{i}" for i in (*range(52), 53)]  # the torn row dropped, none lost
    aside = [f for f in os.listdir(tmp_path) if f.startswith("lb.csv.journal.corrupt-")]
    assert len(aside) == 1 and whole[: len(whole) // 2] in open(tmp_path / aside[0], "rb").read()  # kept, not deleted
    assert records.read_leaderboard(lb).equals(view)  # folded once: no second warning, nothing changes
    assert not capfd.readouterr().err


def test_a_record_damaged_inside_the_journal_fails_its_checksum(tmp_path, monkeypatch, capfd):
    lb = str(tmp_path / "lb.csv")
    table_of(lb, 50)
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    for i in (50, 51, 52):
        records.upsert_leaderboard(lb, row(i))
    data = open(records.journal_of(lb), "rb").read()
    open(records.journal_of(lb), "wb").write(data.replace(b'"psnr":37.0', b'"psnr":99.0'))  # cell_51's value
    view = records.read_leaderboard(lb)
    assert "cell_51" not in set(view["run"]) and {"cell_50", "cell_52"} <= set(view["run"])
    assert capfd.readouterr().err.count("warning:") == 1


CONCURRENT = """
import sys
from harness import records
records.COMPACT_BELOW = 4096  # small: both regimes (fold on every upsert, then the journal) are raced
lb, who, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    records.upsert_leaderboard(lb, {"run": f"w{who}_{i}", "who": who, "i": i, "psnr": float(i)})
    records.upsert_leaderboard(lb, {"run": "shared", "who": who, "i": i, "psnr": -1.0})  # every writer replaces it
    if i % 10 == 9:
        records.read_leaderboard(lb)  # a reader folding while the others append
"""


def test_concurrent_upserts_from_several_processes_lose_and_duplicate_nothing(tmp_path):
    lb, n, k = str(tmp_path / "lb.csv"), 40, 4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, lb, str(w), str(n)], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(k)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
        assert "warning" not in p.stderr.read()
    view = records.read_leaderboard(lb)
    assert view["run"].is_unique and len(view) == n * k + 1
    assert set(view["run"]) == {f"w{w}_{i}" for w in range(k) for i in range(n)} | {"shared"}
    shared = view.set_index("run").loc["shared"]
    assert shared["i"] == n - 1 and shared["psnr"] == -1.0  # the last write of the shared run won
    mine = view[view["run"] != "shared"]
    assert (mine["psnr"] == mine["i"].astype(float)).all()


def test_the_fold_equals_one_upsert_after_another_and_a_rebuild_from_the_run_folders(tmp_path, monkeypatch):
    rows = [row(i) for i in range(30)]
    rows[7] = {**rows[7], "lpips": 0.25}  # a new column in the middle
    writes = [*rows[:10], {**rows[3], "psnr": -5.0}, *rows[10:], rows[3], {"run": "elsewhere", "psnr": 1.0}]
    one_by_one, journalled = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    monkeypatch.setattr(records, "COMPACT_BELOW", 10 ** 9)  # a fold per upsert: the table is always complete
    for r in writes:
        records.upsert_leaderboard(one_by_one, r)
    assert not os.path.exists(records.journal_of(one_by_one))
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    records.upsert_leaderboard(journalled, writes[0])  # the table (folded: it was empty)
    for r in writes[1:]:
        records.upsert_leaderboard(journalled, r)
    assert os.path.exists(records.journal_of(journalled))
    a, b = records.read_leaderboard(one_by_one), records.read_leaderboard(journalled)
    pd.testing.assert_frame_equal(a, b)
    assert a["run"].is_unique and a.set_index("run").loc["cell_3", "psnr"] == rows[3]["psnr"]

    root = tmp_path / "runs"  # the same rows as run folders: the rebuild from them is the same table
    for r in writes:
        records.RunDir(str(root), r["run"]).write_summary(pd.DataFrame([r]))
    rebuilt = records.rebuild_leaderboard([str(root)], str(tmp_path / "c.csv"))
    key = lambda df: df.set_index("run").sort_index()[sorted(df.columns.drop("run"))]  # noqa: E731
    pd.testing.assert_frame_equal(key(rebuilt), key(a), check_dtype=False)


def test_readers_see_journal_rows(make_cfg, tmp_path, monkeypatch):
    """sweep --aggregate's rebuild keeps the journal's rows of runs it does not read, and folds them in."""
    import sweep
    from harness.runner import run_cell

    lb = str(tmp_path / "lb.csv")
    table_of(lb, 30)
    monkeypatch.setattr(records, "COMPACT_BELOW", 0)
    cfg = make_cfg("solver=pinv", "dataset.n=2", "run.num_samples=2", "compute.device=cpu", "metrics.n_ref=64",
                   f"run.leaderboard={lb}")
    s = run_cell(cfg)
    records.upsert_leaderboard(lb, row(99))
    assert {s["run"], "cell_99"} <= {r["run"] for r in map(records.json.loads, (ln.split(b" ", 1)[1] for ln in lines(lb)))}
    assert s["run"] not in set(pd.read_csv(lb)["run"])  # the table alone lags the journal
    sweep.aggregate(cfg.run.root, lb, ["psnr"])
    table = pd.read_csv(lb)
    assert not os.path.exists(records.journal_of(lb)) and table["run"].is_unique
    assert {s["run"], "cell_99", "cell_0"} <= set(table["run"]) and len(table) == 32
    records.check_leaderboard(lb)


def test_importing_records_costs_no_pandas_or_torch():
    code = "import sys, harness.records; print(sorted(m for m in ('pandas', 'torch') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_table_keeps_the_upserted_row_in_the_journal(tmp_path, capfd, damage):
    lb = str(tmp_path / "lb.csv")
    table_of(lb, 3)
    data = open(lb, "rb").read()
    open(lb, "wb").write(data[:-20] if damage == "truncated" else data.replace(b"dps", b"dpz", 1))
    records.upsert_leaderboard(lb, row(7))
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and err[0].startswith(f"warning: leaderboard {lb} ") and "kept in" in err[0]
    assert len(lines(lb)) == 1
    with pytest.raises(records.ConfigError, match="move it aside, or rebuild it"):
        records.check_leaderboard(lb)
    table = records.rebuild_leaderboard([str(tmp_path / "none")], lb)  # moved aside, the journal's row kept
    assert list(table["run"]) == ["cell_7"]


def test_read_summaries_parses_per_header_as_a_parse_per_file_would(tmp_path, capfd):
    """--aggregate's reader parses the rows of files that share a header at once: the same frame (values,
    dtypes, order) as reading each file on its own and concatenating, damaged files still moved aside."""
    for i in range(12):
        r = row(i, seed=i % 3, prompt=str(i % 2))
        if i % 3 == 0:
            r["lpips"] = 0.1 * i  # a second header
        if i % 4 == 0:
            r["note"] = "a, \"quoted\"\nline"  # a quoted newline inside a row
        records.RunDir(str(tmp_path), r["run"]).write_summary(pd.DataFrame([r]))
    os.makedirs(tmp_path / "legacy")
    (tmp_path / "legacy" / "summary.csv").write_text("run,psnr,flag\nlegacy,1.5,True\n")  # before checksums
    os.makedirs(tmp_path / "two")
    (tmp_path / "two" / "summary.csv").write_text("run,psnr\na,1\nb,2\n")
    files = sorted(p for p in (tmp_path).glob("*/summary.csv") if p.parent.name != "two")
    per_file = pd.concat([records.read_csv_bytes(open(f, "rb").read()) for f in files], ignore_index=True)
    got = records.read_summaries([str(tmp_path)])
    pd.testing.assert_frame_equal(got, per_file)
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and "two/summary.csv holds 2 rows, not one summary row" in err[0]
