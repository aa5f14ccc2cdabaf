"""The leaderboard upsert on a table under records.COMPACT_BELOW (every committed table; the journal is folded
at once, so the file holds every row): a new run with the table's columns adds one line, byte for byte what
the full pandas rewrite writes; a known run or new columns take the full rewrite. The journal of larger
tables: tests/test_journal.py."""
import math
import os

import pandas as pd

from harness import records


def rows():
    out = []
    for i in range(6):
        r = {"run": f"cell_{i}", "solver": "dps", "params": '{"a": 1, "b": "x, \\"y\\""}', "n_ok": 16, "flag": i % 2 == 0,
             "psnr": 20.0 + i / 3, "fid": math.nan if i == 2 else 1.5}
        out.append(r)
    return out


def test_appended_rows_equal_the_full_rewrite_and_upserts_still_replace(tmp_path, monkeypatch):
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    rewrites = []
    real = records._write_leaderboard
    monkeypatch.setattr(records, "_write_leaderboard", lambda p, df: (rewrites.append(len(df)), real(p, df)))
    for r in rows():
        records.upsert_leaderboard(a, r)
    assert rewrites == [1]  # the first row makes the table; the other five are appended
    real(b, pd.DataFrame(rows()))
    assert open(a, "rb").read() == open(b, "rb").read()
    records.read_checked(a)  # its checksum sidecar follows every append
    records.upsert_leaderboard(a, {**rows()[1], "psnr": 99.0})  # a known run: replaced, not appended
    df = pd.read_csv(a)
    assert len(df) == 6 and list(df["run"]).count("cell_1") == 1 and df.loc[df["run"] == "cell_1", "psnr"].item() == 99
    records.upsert_leaderboard(a, {**rows()[0], "run": "cell_9", "lpips": 0.1})  # new columns: the full rewrite
    df = pd.read_csv(a)
    assert len(df) == 7 and "lpips" in df and rewrites[-1] == 7
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
