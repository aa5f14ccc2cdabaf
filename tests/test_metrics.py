"""LPIPS, FID/KID, best-of-N columns and loggers: values agree with the libraries called directly,
missing weights fail before compute, per-set metrics are recorded with their protocol."""
import os

import numpy as np
import pandas as pd
import pytest
import torch

from harness.runner import run_cell
from metrics import fid as fidlib
from core.errors import ConfigError

FAST = ["solver=pinv", "dataset.n=6", "run.num_samples=3", "compute.device=cpu"]
TINY = "tests.tiny_features:features"


def rows_of(cfg, s):
    return pd.read_csv(os.path.join(cfg.run.root, s["run"], "images.csv"), dtype={"image_id": str})


# ---------------------------------------------------------------- LPIPS

def test_lpips_agrees_with_the_package_called_directly():
    import lpips

    from metrics.lpips import LPIPS
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1, torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    ours = LPIPS(("vgg", "alex"), random_backbone=True, min_size=64, batch_size=2, seed=0)(a, b)
    for net in ("vgg", "alex"):
        torch.manual_seed(0)  # the same random backbone our wrapper drew
        ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False).eval()
        with torch.no_grad():
            direct = ref(a, b).flatten()  # [-1,1] inputs, normalize=False: no rescaling anywhere
        assert torch.allclose(ours[f"lpips_{net}"], direct, atol=1e-6), net
        assert (direct > 0).all()


def test_lpips_columns_mean_std_and_best_of_n_in_rows(make_cfg):
    cfg = make_cfg("solver=exact", "dataset.n=3", "run.num_samples=4", "metrics.lpips=[vgg,alex]",
                   "metrics.lpips_random_backbone=true", "metrics.lpips_min_size=32")
    s = run_cell(cfg)
    r = rows_of(cfg, s)
    for m in ("lpips_vgg", "lpips_alex", "ssim"):
        assert {m, f"{m}_std_samples", f"{m}_bestpsnr"} <= set(r.columns)
        assert r[m].notna().all() and (r[f"{m}_std_samples"] > 0).all()
    assert {"psnr", "psnr_best", "psnr_std_samples", "best_sample"} <= set(r.columns)
    assert (r["psnr_best"] >= r["psnr"]).all() and r["best_sample"].between(0, 3).all()
    assert s["lpips_min_size"] == 32 and "lpips_vgg_std_images" in s and "best_sample" not in s
    # best-of-N by PSNR picks one sample: its SSIM is that sample's, not the best SSIM
    assert ((r["ssim_bestpsnr"] - r["ssim"]).abs() > 0).any()


def test_lpips_without_backbone_weights_offline_fails_before_compute(make_cfg, tmp_path):
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    try:
        cfg = make_cfg(*FAST, "metrics=full")
        with pytest.raises(ConfigError, match=r"LPIPS-vgg needs the torchvision backbone vgg16-397923af\.pth in "
                                              r".*empty_hub/checkpoints/"):
            run_cell(cfg)
        assert not os.path.exists(cfg.run.root)
        with pytest.raises(ConfigError, match="unknown LPIPS backbone 'squeeze'"):
            run_cell(make_cfg(*FAST, "metrics.lpips=[squeeze]"))
    finally:
        torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))


# ---------------------------------------------------------------- FID / KID

def test_frechet_distance_and_kid_agree_with_clean_fid_and_numpy():
    from cleanfid import fid as cf
    g = np.random.default_rng(0)  # test data only; the harness draws nothing from numpy
    a, b = g.normal(size=(40, 6)), g.normal(0.3, 1.2, size=(40, 6))
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert fidlib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(cf.frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    assert fidlib.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)
    # equal sizes, one subset holding every feature: clean-fid's estimator is exactly the unbiased MMD²
    assert fidlib.kid(a, b)[0] == pytest.approx(cf.kernel_distance(a, b, num_subsets=1, max_subset_size=1000), rel=1e-9)
    # unequal sizes: the formula written out term by term
    c = b[:25]
    k = lambda x, y: (x @ y.T / 6 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(a, a), k(c, c), k(a, c)
    direct = ((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (25 * 24) - 2 * kxy.mean())
    assert fidlib.kid(a, c)[0] == pytest.approx(direct, rel=1e-9)
    m, sd = fidlib.kid(a, b, subsets=20, subset_size=30)  # subsets drawn from a seeded torch generator
    assert sd > 0 and (m, sd) == fidlib.kid(a, b, subsets=20, subset_size=30)


def test_fid_and_kid_of_a_run_with_custom_features(make_cfg):
    from cleanfid import fid as cf

    from harness.records import RunDir
    from tests.tiny_features import features
    sets = ["metrics.set=[fid,kid]", f"metrics.fid_features={TINY}"]
    cfg = make_cfg(*FAST, *sets)
    s = run_cell(cfg)
    assert s["fid_n"] == 6 and s["fid_ref_n"] == 6 and s["fid_features"] == TINY and s["fid_mode"] == "clean"
    assert s["fid_reference"].startswith("truths:gmm_test_")
    recon = RunDir(cfg.run.root, s["run"]).reconstructions()
    from harness.build import build_cell
    x, _ = build_cell(cfg).dataset.batch(list(range(6)))
    fr, ft = features(torch.stack([recon[str(i)] for i in range(6)])).numpy(), features(x).numpy()
    assert s["fid"] == pytest.approx(cf.fid_from_feats(fr, ft), rel=1e-6)
    assert s["kid"] == pytest.approx(cf.kernel_distance(fr, ft, num_subsets=1), rel=1e-6)
    cached = os.listdir(os.path.join(cfg.run.cache, "fid_stats"))
    assert len(cached) == 1
    # another solver of the sweep reuses the truths' cached statistics, and can name them
    name = cached[0][:-4]
    s2 = run_cell(make_cfg(*FAST[1:], "solver=exact", *sets, f"metrics.fid_reference={name}"))
    assert s2["fid_reference"] == name and s2["fid"] < s["fid"]  # exact posterior samples look like the data
    assert os.listdir(os.path.join(cfg.run.cache, "fid_stats")) == cached


@pytest.mark.parametrize("overrides,message", [
    (["metrics.set=[fid]"], r"FID/KID \(clean\) needs the Inception weights inception-2015-12-05\.pt in /tmp/"),
    (["metrics.set=[kid]", "metrics.fid_mode=legacy_pytorch"],
     r"needs the Inception weights pt_inception-2015-12-05-6726825d\.pth in .*/checkpoints/"),
    (["metrics.set=[fid]", "metrics.fid_mode=tf"], "unknown metrics.fid_mode 'tf'"),
    (["metrics.set=[fud]"], "unknown per-set metric fud"),
    (["metrics.set=[fid]", f"metrics.fid_features={TINY}", "metrics.fid_reference=ffhq_train"],
     "metrics.fid_reference=ffhq_train: no statistics at"),
])
def test_fid_errors_come_before_compute(make_cfg, overrides, message, tmp_path):
    if "Inception" in message and os.path.exists(fidlib.inception_file("legacy_pytorch" if "pt_" in message else "clean")):
        pytest.skip("the Inception weights are present on this machine")
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    try:
        cfg = make_cfg(*FAST, *overrides)
        with pytest.raises(ConfigError, match=message):
            run_cell(cfg)
        assert not os.path.exists(cfg.run.root)
    finally:
        torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))


# ---------------------------------------------------------------- loggers

def test_wandb_offline_logs_config_rows_summary_and_grid(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg(*FAST, "logger=wandb")
    s = run_cell(cfg)
    runs = [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1 and runs[0].endswith(s["run"])
    d = tmp_path / "wandb" / runs[0]
    import glob
    import json
    table = json.load(open(glob.glob(str(d / "files" / "media" / "table" / "images_*.table.json"))[0]))
    assert len(table["data"]) == 6 and "image_id" in table["columns"] and "psnr" in table["columns"]
    assert glob.glob(str(d / "files" / "media" / "images" / "grid_*.png"))
    import time
    for _ in range(100):  # the run's record log (config, summary): wandb's service may still be flushing it
        log = open(glob.glob(str(d / "*.wandb"))[0], "rb").read()
        if b"psnr_std_images" in log:
            break
        time.sleep(0.2)
    assert b"PseudoInverse" in log and b"n_ok" in log and b"psnr_std_images" in log


def test_wandb_online_without_a_key_is_one_sentence(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = make_cfg(*FAST, "logger=wandb")
    with pytest.raises(ConfigError, match="no W&B API key was found; run `wandb login`"):
        run_cell(cfg)
    assert not os.path.exists(cfg.run.root)
