"""Blur operator sizes relative to the image (as the masks'): the task defaults are the published 61 px / σ 3.0
at 256 px written as fractions of the side, with floors so that small images keep a visible blur; presets keep
the published pixels."""
import math

import pytest
import torch

from core.errors import ConfigError
from harness.build import instantiate
from harness.cli import compose

# side -> (kernel px, sigma px), written out from the rule: window 61/256 of the side rounded to the odd width
# in [v-1, v+1), at least the truncated Gaussian's 2·int(4σ+0.5)+1 taps; σ = 3/256 of the side, at least 1 px
GAUSS = {16: (9, 1.0), 64: (15, 1.0), 256: (61, 3.0), 512: (123, 6.0)}
MOTION = {16: 9, 64: 15, 256: 61, 512: 123}  # 61/256 of the side, at least 9 px


def task(overrides, side):
    return instantiate("task", compose(overrides).task, image_shape=(3, side, side))


@pytest.mark.parametrize("side", sorted(GAUSS))
@pytest.mark.parametrize("name", ["deblur_gauss", "deblur_gauss_circ"])
def test_gaussian_defaults_scale_with_the_image(name, side):
    t = task([f"task={name}"], side)
    assert (t.kernel_size, t.sigma) == GAUSS[side]
    # the kernel: a sampled Gaussian truncated at radius int(4σ + 0.5), normalised, inside the window
    k = t.draw([0], 0)["kernel"][0]
    r = torch.arange(t.kernel_size, dtype=torch.float64) - t.kernel_size // 2
    g = torch.exp(-0.5 * (r / t.sigma) ** 2) * (r.abs() <= int(4 * t.sigma + 0.5))
    assert torch.allclose(k, torch.outer(g, g) / g.sum() ** 2, atol=1e-12)


@pytest.mark.parametrize("side", sorted(MOTION))
def test_motion_default_scales_with_the_image(side):
    t = task(["task=deblur_motion"], side)
    assert t.kernel_size == MOTION[side] and t.intensity == 0.5
    k = t.draw([0, 1], 0)["kernel"]
    assert k.shape == (2, MOTION[side], MOTION[side]) and torch.allclose(k.sum((1, 2)), torch.ones(2, dtype=k.dtype))


def test_the_16_px_world_keeps_its_operator():
    """At 16 px the relative defaults are the sizes the 16-px tables were made with (9 taps, σ 1.0)."""
    from tasks.blur import GaussianBlur
    from tasks.motion import MotionBlur
    for name, boundary in (("deblur_gauss", "reflect"), ("deblur_gauss_circ", "circular")):
        new = task([f"task={name}"], 16)
        old = GaussianBlur((3, 16, 16), kernel_size=9, sigma=1.0, boundary=boundary)
        assert torch.equal(new.draw([0], 0)["kernel"], old.draw([0], 0)["kernel"])
    new, old = task(["task=deblur_motion"], 16), MotionBlur((3, 16, 16), kernel_size=9, intensity=0.5)
    assert torch.equal(new.draw([3, 7], 5)["kernel"], old.draw([3, 7], 5)["kernel"])


@pytest.mark.parametrize("preset,expected", [
    ("dps_ffhq_deblur_gauss", (61, 3.0, "reflect")), ("daps_ffhq_deblur_gauss", (61, 3.0, "reflect")),
    ("diffpir_ffhq_deblur_gauss", (61, 3.0, "circular"))])
def test_gaussian_presets_keep_the_published_pixels(preset, expected):
    cfg = compose([f"+experiment={preset}"]).task
    assert (cfg.kernel_size, cfg.sigma) == (61, 3.0)
    t = instantiate("task", cfg, image_shape=(3, 256, 256))
    assert (t.kernel_size, t.sigma, t.boundary) == expected and t.truncate == 4.0
    assert int(t.truncate * t.sigma + 0.5) == 12  # scipy gaussian_filter's radius for σ 3


@pytest.mark.parametrize("preset", ["dps_ffhq_deblur_motion", "daps_ffhq_deblur_motion", "diffpir_ffhq_deblur_motion"])
def test_motion_presets_keep_the_published_pixels(preset):
    cfg = compose([f"+experiment={preset}"]).task
    assert (cfg.kernel_size, cfg.intensity) == (61, 0.5)
    t = instantiate("task", cfg, image_shape=(3, 256, 256))
    assert (t.kernel_size, t.intensity) == (61, 0.5)


def test_bad_sizes_are_one_sentence():
    from tasks.blur import GaussianBlur
    with pytest.raises(ConfigError, match="whole number of pixels"):
        GaussianBlur((3, 64, 64), kernel_size=8.5)
    with pytest.raises(ConfigError, match="odd"):
        GaussianBlur((3, 64, 64), kernel_size=8)
    with pytest.raises(ConfigError, match="sigma must be > 0"):
        GaussianBlur((3, 64, 64), kernel_size=9, sigma=-0.5)
    with pytest.raises(ConfigError, match="larger than"):
        GaussianBlur((3, 16, 16), kernel_size=61, sigma=3.0)
    # a fraction never asks for a window wider than the image: at 8 px the 9-tap floor is cut to 7
    t = GaussianBlur((3, 8, 8), kernel_size=61 / 256, sigma=3 / 256)
    assert (t.kernel_size, t.sigma) == (7, 1.0) and math.isclose(float(t.draw([0], 0)["kernel"].sum()), 1.0)
