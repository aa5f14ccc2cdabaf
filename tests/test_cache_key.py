"""The measurement cache's key names the dataset as the identity does (config less paths, fingerprint):
a moved data folder reuses its frozen measurements, a changed image gets a fresh one."""
import os
import shutil

import pandas as pd
import pytest
from PIL import Image

from tests.helpers import png


def _run(make_cfg, tmp_path, folder, tag):
    from harness.runner import run_cell

    cfg = make_cfg("dataset=ffhq", f"dataset.root={folder}", "dataset.id_range=[0,2]", "dataset.pattern='{id}.bmp'",
                   "solver=ddim", "solver.steps=2", "run.num_samples=1", "metrics.posterior=false",
                   f"run.root={tmp_path}/{tag}/runs", f"run.leaderboard={tmp_path}/{tag}/lb.csv",
                   f"run.cache={tmp_path}/cache")  # one cache for every run of this test
    s = run_cell(cfg)
    rows = pd.read_csv(os.path.join(cfg.run.root, s["run"], "images.csv"), dtype=str)
    return s["run"], dict(zip(rows["image_id"], rows["measurement_key"]))


def _files(tmp_path):
    return sorted(os.listdir(tmp_path / "cache" / "measurements"))


def _images(folder):
    for i in range(2):
        Image.open(png(folder / f"tmp{i}.png", 16, 16)).save(folder / f"{i:05d}.bmp")  # BMP: size fixed by W×H
        os.remove(folder / f"tmp{i}.png")


def test_a_moved_data_folder_reuses_the_cache_and_a_changed_image_does_not(make_cfg, tmp_path):
    a = tmp_path / "a" / "images"
    _images(a)
    name, keys = _run(make_cfg, tmp_path, a, "first")
    before = _files(tmp_path)
    assert len(before) == 2
    b = tmp_path / "b" / "moved"
    shutil.move(str(a), str(b))
    name2, keys2 = _run(make_cfg, tmp_path, b, "moved")
    assert name2 == name and keys2 == keys and _files(tmp_path) == before  # same cell, same measurements

    img = Image.open(b / "00001.bmp").convert("RGB")  # one pixel changed, same file size (BMP)
    size = os.path.getsize(b / "00001.bmp")
    img.putpixel((3, 4), tuple(255 - v for v in img.getpixel((3, 4))))
    img.save(b / "00001.bmp")
    assert os.path.getsize(b / "00001.bmp") == size  # so the dataset fingerprint (names, sizes) is unchanged
    _, keys3 = _run(make_cfg, tmp_path, b, "changed")
    assert keys3["00000"] == keys["00000"] and keys3["00001"] != keys["00001"]
    assert len(_files(tmp_path)) == 3  # the changed image's y is drawn afresh; the other is read back


def test_the_cache_key_holds_no_path(make_cfg, tmp_path):
    from harness.build import build_cell
    from harness.runner import cell_key

    folder = tmp_path / "somewhere" / "images"
    _images(folder)
    cfg = make_cfg("dataset=ffhq", f"dataset.root={folder}", "dataset.id_range=[0,2]", "dataset.pattern='{id}.bmp'")
    key = cell_key(cfg, build_cell(cfg))["dataset"]
    assert "fingerprint" in key and str(tmp_path) not in repr(key)
