"""Metric weight files from metrics.weights_dir or $DIFFINV_WEIGHTS_DIR; defaults are the libraries' caches."""
import os

import pytest
import torch

from metrics import WEIGHTS_ENV, hub_checkpoints
from metrics import fid as fidlib
from metrics.lpips import BACKBONE_FILES, check_nets
from core.errors import ConfigError


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)


def test_defaults_are_the_libraries_own_locations():
    assert fidlib.inception_file("clean") == "/tmp/inception-2015-12-05.pt"
    assert fidlib.inception_file("legacy_pytorch") == os.path.join(torch.hub.get_dir(), "checkpoints",
                                                                  fidlib.INCEPTION_PT)


@pytest.mark.parametrize("mode", fidlib.MODES)
def test_a_missing_inception_file_is_one_sentence_naming_it_and_the_folder(tmp_path, mode):
    with pytest.raises(ConfigError) as e:
        fidlib.check_features("inception", mode, str(tmp_path))
    msg = str(e.value)
    name = fidlib.INCEPTION_PT if mode == "legacy_pytorch" else fidlib.INCEPTION_TS
    assert name in msg and str(tmp_path) in msg and "metrics.weights_dir" in msg and msg.count(". ") == 0


def test_the_environment_names_the_folder_when_config_does_not(tmp_path, monkeypatch):
    (tmp_path / fidlib.INCEPTION_TS).write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert fidlib.inception_file("clean") == str(tmp_path / fidlib.INCEPTION_TS)
    fidlib.check_features("inception", "clean")  # found: no error
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(ConfigError, match="other"):  # config wins over the environment
        fidlib.check_features("inception", "clean", str(other))


def test_lpips_backbones_are_looked_up_in_the_folder(tmp_path):
    with pytest.raises(ConfigError, match=f"{BACKBONE_FILES['vgg']} in {tmp_path}/"):
        check_nets(["vgg"], folder=str(tmp_path))
    (tmp_path / BACKBONE_FILES["vgg"]).write_bytes(b"x")
    check_nets(["vgg"], folder=str(tmp_path))


def test_hub_checkpoints_points_torch_hub_at_the_folder_and_back(tmp_path):
    before = torch.hub.get_dir()
    (tmp_path / "w.pth").write_bytes(b"x")
    with hub_checkpoints(str(tmp_path)):
        assert os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", "w.pth"))
    assert torch.hub.get_dir() == before


class TinyInception(torch.nn.Module):
    """Stands in for clean-fid's torchscript Inception: `layers` maps 299² images to 2048 features."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2048))

    def forward(self, x, return_features: bool = True):
        return self.layers(x)


def test_clean_fid_features_load_the_inception_file_from_the_folder(tmp_path):
    pytest.importorskip("cleanfid")
    torch.manual_seed(0)
    net = TinyInception()
    torch.jit.save(torch.jit.script(net), str(tmp_path / fidlib.INCEPTION_TS))
    extract = fidlib.load_features("inception", "clean", "cpu", str(tmp_path))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    got = extract(x)
    assert got.shape == (2, 2048)
    # the same pipeline by hand: uint8, clean-fid's resize to 299, (u - 128) / 128, our tiny network
    import numpy as np
    from cleanfid.resize import build_resizer

    u8 = ((x + 1) * 127.5).round().to(torch.uint8)
    resize = build_resizer("clean")
    imgs = torch.stack([torch.as_tensor(np.asarray(resize(im.permute(1, 2, 0).numpy()))).permute(2, 0, 1)
                        for im in u8]).float()
    with torch.no_grad():
        ref = net.layers((imgs - 128) / 128).double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
