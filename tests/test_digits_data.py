"""The shipped digits world (split, prior, classifier, default run) and the image-folder datasets."""
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from core.errors import ConfigError
from tests.helpers import coco, png

from core.files import REPO_ROOT as ROOT
PIXEL = os.path.join(ROOT, "models", "weights", "digits_pixel")
CLASSIFIER = os.path.join(ROOT, "models", "weights", "digits_classifier", "model.safetensors")


def fake_prior(shape=(3, 16, 16)):
    return SimpleNamespace(image_shape=shape, name="fake")


# -- the digits split --------------------------------------------------------------------------------
def test_digits_split_is_fixed_disjoint_and_matches_the_gmm_preprocessing():
    from data.digits import HELD_OUT, TEST_SIZE, VAL_SIZE, DigitsDataset, digits_tensors, split_indices
    from sklearn.datasets import load_digits

    s = split_indices()
    assert len(s["test"]) == TEST_SIZE == 200 and len(s["val"]) == VAL_SIZE == 100
    assert len(s["train"]) == 1797 - HELD_OUT
    assert not set(s["test"]) & set(s["train"]) and not set(s["val"]) & set(s["train"])
    assert not set(s["val"]) & set(s["test"]) and max(s["test"]) < min(s["val"])  # val: the tail of the held-out ids
    assert s["test"][:5] == sorted(s["test"])[:5]
    ds = DigitsDataset(fake_prior((1, 16, 16)), n=4, start=2)
    assert ds.ids == s["test"][2:6]
    x, caps = ds.batch(ds.ids)
    assert x.shape == (4, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    d = load_digits()
    assert caps == [str(d.target[i]) for i in ds.ids]
    ref = torch.tensor(d.images[ds.ids], dtype=torch.float64)[:, None] / 16.0
    ref = torch.nn.functional.interpolate(ref, size=(16, 16), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(x.double(), ref, atol=1e-6, rtol=0)
    xt, yt = digits_tensors("test")
    assert xt.shape == (TEST_SIZE, 1, 16, 16) and yt.bincount().min() >= 12  # every class held out (12 sixes to 26 ones)


@pytest.mark.parametrize("kwargs,shape,message", [
    ({"split": "valid"}, (1, 16, 16), "dataset.split='valid' is not a digits split"),
    ({"n": 0}, (1, 16, 16), "dataset.n must be >= 1"),
    ({"start": 200}, (1, 16, 16), r"0 <= dataset.start < 200"),
    ({}, (3, 256, 256), "dataset=digits gives 1×H×H grey images"),
])
def test_digits_dataset_errors(kwargs, shape, message):
    from data.digits import DigitsDataset

    with pytest.raises(ConfigError, match=message):
        DigitsDataset(fake_prior(shape), **kwargs)


# -- image folders -----------------------------------------------------------------------------------


@pytest.fixture
def ffhq(tmp_path):
    root = tmp_path / "ffhq"
    for i in list(range(0, 4)) + [69000, 69010]:
        png(root / f"{i:05d}.png", 24, 24)
    return root


def folder(root, prior=None, **kw):
    from data.folder import ImageFolderDataset

    return ImageFolderDataset(prior or fake_prior(), str(root), **kw)


def test_ffhq_layout_ids_and_images(ffhq):
    import numpy as np
    from PIL import Image

    ds = folder(ffhq, pattern="{id}.png", id_range=[0, 3], id_format="05d", name="ffhq")
    assert ds.ids == ["00000", "00001", "00002"]
    x, caps = ds.batch(ds.ids)
    assert x.shape == (3, 3, 16, 16) and caps == [None] * 3 and -1 <= x.min() and x.max() <= 1
    # bicubic anti-aliased resize of the (already square) image, mapped to [-1,1]
    ref = torch.tensor(np.asarray(Image.open(ffhq / "00001.png")), dtype=torch.float32).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(ref / 255, size=(16, 16), mode="bicubic", antialias=True).clamp(0, 1) * 2 - 1
    torch.testing.assert_close(x[1], ref[0])
    step = folder(ffhq, pattern="{id}.png", id_range=[69000, 69020, 10], id_format="05d")
    assert step.ids == ["69000", "69010"]
    assert folder(ffhq, pattern="{id}.png", id_range=[0, 4], id_format="05d", start=1, n=2).ids == ["00001", "00002"]


def test_centre_crop_of_non_square_images(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (10, 0, 20, 10))  # white centre square, black sides
    (tmp_path / "a").mkdir()
    img.save(tmp_path / "a" / "wide.png")
    ds = folder(tmp_path / "a", ids=["wide.png"], prior=fake_prior((1, 10, 10)))
    x, _ = ds.load("wide.png")
    assert x.shape == (1, 10, 10) and torch.allclose(x, torch.ones_like(x))  # only the centre survives the crop


def test_ffhq_presets_compose_with_the_published_ids(ffhq):
    from harness.cli import compose

    for name, first, last, count in [("ffhq", "00000", "00999", 1000), ("ffhq_diffpir100", "69000", "69990", 100),
                                     ("ffhq_daps100", "00000", "00099", 100)]:
        cfg = compose([f"dataset={name}", f"dataset.root={ffhq}"]).dataset
        from data.folder import ImageFolderDataset

        ids = [format(i, cfg.id_format) for i in range(*cfg.id_range)]
        assert (ids[0], ids[-1], len(ids)) == (first, last, count)
        assert cfg._target_ == "data.folder.ImageFolderDataset" and cfg.name == name
    ds = ImageFolderDataset(fake_prior(), **{k: v for k, v in compose(
        ["dataset=ffhq", f"dataset.root={ffhq}", "dataset.n=3"]).dataset.items() if k != "_target_"})
    assert ds.ids == ["00000", "00001", "00002"]


def test_imagenet_layout_with_id_file_and_labels(tmp_path):
    root = tmp_path / "val"
    png(root / "n01440764" / "ILSVRC2012_val_00000293.JPEG", 20, 16)
    png(root / "ILSVRC2012_val_00000001.JPEG", 16, 20)
    (tmp_path / "ids.txt").write_text("# imagenet ids\nn01440764/ILSVRC2012_val_00000293.JPEG\nILSVRC2012_val_00000001.JPEG\n")
    (root / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000293.JPEG 0\n")
    ds = folder(root, id_file=str(tmp_path / "ids.txt"), labels="val.txt", name="imagenet")
    assert ds.ids == ["n01440764/ILSVRC2012_val_00000293.JPEG", "ILSVRC2012_val_00000001.JPEG"]
    x, caps = ds.batch(ds.ids)
    assert x.shape == (2, 3, 16, 16) and caps == ["0", "65"] and ds.label(ds.ids[1]) == 65
    # labels may also come as the id file's second column
    (root / "ids2.txt").write_text("ILSVRC2012_val_00000001.JPEG, 65\n")
    assert folder(root, id_file="ids2.txt").label("ILSVRC2012_val_00000001.JPEG") == 65
    assert folder(root, id_file="ids2.txt", prior=fake_prior((1, 8, 8))).load("ILSVRC2012_val_00000001.JPEG")[0].shape == (1, 8, 8)


def test_coco_layout_ids_and_captions(tmp_path):
    from harness.cli import compose
    from harness.build import instantiate

    root = coco(tmp_path)
    cfg = compose(["dataset=coco", f"dataset.root={root}", "dataset.n=null"])  # n: 1000 > 3 images is refused
    ds = instantiate("dataset", cfg.dataset, prior=fake_prior())
    assert ds.ids == ["139", "285", "632"]  # every captioned image, in id order
    x, caps = ds.batch(ds.ids)
    assert x.shape == (3, 3, 16, 16)
    assert caps == ["A living room.", "A big bear.", "A bed."]  # first caption by annotation id, stripped
    assert folder(root, pattern="{id:0>12}.jpg", captions="../annotations/captions_val2017.json",
                  ids=[632]).batch(["632"])[1] == ["A bed."]


def test_missing_and_corrupt_inputs_fail_in_one_sentence_before_compute(tmp_path, ffhq):
    kw = dict(pattern="{id}.png", id_format="05d")
    cases = [
        (lambda: folder(tmp_path / "nope", id_range=[0, 2], **kw), f"image folder {tmp_path / 'nope'} does not exist"),
        (lambda: folder("???", id_range=[0, 2], **kw), "set dataset.root=/path/to/images"),
        (lambda: folder(ffhq, id_range=[0, 9], **kw), f"image file {ffhq / '00004.png'} does not exist "
                                                       r"\(5 of 9 listed images are missing\)"),
        (lambda: folder(ffhq, id_file="ids.txt"), f"id file {ffhq / 'ids.txt'} does not exist"),
        (lambda: folder(ffhq, id_range=[0, 2], ids=["1"], **kw), "sets ids and id_range; give exactly one"),
        (lambda: folder(ffhq, **kw), "lists no images"),
        (lambda: folder(ffhq, id_range=[0, 2], start=5, **kw), "dataset.start must be in"),
        (lambda: folder(ffhq, id_range=[0, 2], captions="c.json", **kw), f"captions file {ffhq / 'c.json'} does not exist"),
        (lambda: folder(ffhq, id_range=[0, 2], labels="l.txt", **kw), f"labels file {ffhq / 'l.txt'} does not exist"),
        (lambda: folder(ffhq, id_range=[0, 2], prior=fake_prior((4, 16, 16)), **kw), "makes square grey or RGB"),
    ]
    (ffhq / "empty.txt").write_text("# nothing\n")
    cases.append((lambda: folder(ffhq, id_file="empty.txt"), "lists no entries"))
    (ffhq / "bad.json").write_text("{not json")
    cases.append((lambda: folder(ffhq, id_range=[0, 2], captions="bad.json", **kw), "is not a COCO captions json"))
    (ffhq / "cap.json").write_text(json.dumps({"annotations": [{"id": 1, "image_id": "00000", "caption": "x"}]}))
    cases.append((lambda: folder(ffhq, id_range=[0, 2], captions="cap.json", **kw),
                  "has no caption for image id 00001"))
    (ffhq / "lab.txt").write_text("00000 3\n00001 4\n")
    cases.append((lambda: folder(ffhq, id_range=[0, 3], labels="lab.txt", **kw), "has no class for image id 00002"))
    (ffhq / "cat.txt").write_text("00000 3\n00001 cat\n")
    cases.append((lambda: folder(ffhq, id_range=[0, 2], labels="cat.txt", **kw), "gives class 'cat' for 00001; "
                                                                                 "classes must be integers"))
    for make, message in cases:
        with pytest.raises(ConfigError, match=message) as e:
            make()
        assert len(str(e.value).splitlines()) == 1 and str(e.value).endswith(".")


def test_corrupt_images_name_the_file_or_are_skipped(ffhq):
    (ffhq / "00002.png").write_bytes(b"not an image at all")
    good = (ffhq / "00001.png").read_bytes()
    (ffhq / "00003.png").write_bytes(good[: len(good) // 2])  # valid header, truncated pixel data
    kw = dict(pattern="{id}.png", id_format="05d")
    with pytest.raises(ConfigError, match=f"image file {ffhq / '00002.png'} is not a readable image"):
        folder(ffhq, id_range=[0, 4], **kw)
    ds = folder(ffhq, id_range=[0, 2], **kw)
    ds.ids.append("00003")  # header checks pass at construction; decoding is lazy
    with pytest.raises(ConfigError, match=f"image file {ffhq / '00003.png'} cannot be decoded"):
        ds.load("00003")
    skipping = folder(ffhq, id_range=[0, 4], skip_corrupt=True, **kw)
    assert skipping.ids == ["00000", "00001"] and skipping.skipped == ["00002", "00003"]
    assert skipping.describe()["skipped_ids"] == "00002,00003"


# -- the shipped digits prior and classifier ---------------------------------------------------------
@pytest.fixture(scope="module")
def classifier():
    from models.digits_classifier import load_classifier

    return load_classifier()


def test_classifier_is_accurate_on_held_out_digits(classifier):
    from data.digits import digits_tensors
    from models.digits_classifier import FEATURE_DIM, confidence, features

    x, y = digits_tensors("test")
    conf, cls = confidence(x, classifier)
    assert (cls == y).float().mean() >= 0.97  # measured: 1.000 on the 300 held-out digits
    assert features(x[:5], classifier).shape == (5, FEATURE_DIM)
    with pytest.raises(ConfigError, match="takes \\[N,1,16,16\\] images"):
        features(torch.zeros(2, 3, 16, 16), classifier)


# Thresholds from measurements (models/weights/README.md). Mean max-softmax confidence: real
# digits 0.99998, clipped Gaussian noise 0.79 (the classifier is over-confident off its domain),
# 64 DDIM-50 samples 0.936 / 0.960 (seeds 2 / 1; 0.944 over 256). 0.90 sits above noise, below the
# samples. Domain Fréchet distance (classifier features, 64 vs the 300 test digits): 64 real train
# digits 367-693 (3 draws; small-sample bias is large), samples 469-574, noise 3164; 1500 is about
# the geometric mean of real and noise, so it separates "digit-like" from "not digits" with margin.
SAMPLE_MIN_CONF = 0.90
SAMPLE_MAX_FD = 1500.0


def test_digits_prior_samples_are_digits(classifier):
    from models.diffusers_pixel import DiffusersPixelPrior
    from tools.eval_digits import frechet_distance, sample
    from data.digits import digits_tensors
    from models.digits_classifier import confidence, features

    prior = DiffusersPixelPrior(PIXEL, name="digits")
    assert prior.image_shape == (1, 16, 16) and prior.prediction == "epsilon"
    assert sum(f.stat().st_size for f in __import__("pathlib").Path(PIXEL).rglob("*") if f.is_file()) < 10e6
    x = sample(prior, 64, steps=50, seed=1)
    assert prior.cost.nfe == 64 * 50
    assert torch.isfinite(x).all()
    conf, cls = confidence(x, classifier)
    assert conf.mean() > SAMPLE_MIN_CONF
    assert len(cls.unique()) >= 6  # not collapsed onto a few classes
    real, _ = digits_tensors("test")
    noise = torch.randn(64, 1, 16, 16, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    fd = frechet_distance(features(x, classifier), features(real, classifier))
    fd_noise = frechet_distance(features(noise, classifier), features(real, classifier))
    print(f"digits prior: mean conf {conf.mean():.4f}, classes {cls.bincount(minlength=10).tolist()}, "
          f"domain FD {fd:.1f} (noise {fd_noise:.1f})")
    assert fd < SAMPLE_MAX_FD < fd_noise


# -- the default run -----------------------------------------------------------------------------------
def test_gmm_world_is_one_override_away():
    from harness.cli import compose

    d = compose([])
    assert (d.names.dataset, d.names.model, d.run.num_samples) == ("digits", "digits", 1)
    assert d.model.path == PIXEL  # ${repo:...} resolves against the repository, not the cwd
    g = compose(["+experiment=gmm", "solver=dps"])
    assert (g.names.dataset, g.names.model, g.names.solver, g.run.num_samples, g.solver.steps) == (
        "gmm", "gmm", "dps", 16, 1000)


def test_default_run_completes_offline_and_writes_its_grid(tmp_path):
    t0 = time.time()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), "dataset.n=2", "solver.steps=10",
                        f"run.root={tmp_path}/runs", f"run.leaderboard={tmp_path}/lb.csv", f"run.cache={tmp_path}/cache",
                        "run.progress=false"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    runs = os.listdir(tmp_path / "runs")
    assert len(runs) == 1 and runs[0].startswith("digits_inpaint_box_dps_fast_digits_s0_")
    run = tmp_path / "runs" / runs[0]
    assert (run / "grid.png").stat().st_size > 0
    import pandas as pd

    s = pd.read_csv(run / "summary.csv").iloc[0]
    assert s["n_ok"] == 2 and s["nfe"] == 10 and s["vjp"] == 10 and s["model"] == "digits"
    assert time.time() - t0 < 120


def test_folder_dataset_without_a_root_fails_before_compute(make_cfg, monkeypatch):
    from harness.build import build_cell

    monkeypatch.delenv("FFHQ_ROOT", raising=False)
    cfg = make_cfg("dataset=ffhq", world=None)
    with pytest.raises(ConfigError, match="dataset ffhq needs the image folder: set dataset.root="):
        build_cell(cfg)
    assert not os.path.exists(cfg.run.root)
