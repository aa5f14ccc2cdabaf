"""Our PSNR and SSIM equal torchmetrics' (the reference implementation) on random images."""
import pytest
import torch

from metrics.image import gaussian_window, psnr, ssim

tm = pytest.importorskip("torchmetrics.functional.image")


def pairs():
    g = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 16, 16), (3, 1, 32, 24), (2, 3, 64, 64)]:
        x = torch.rand(shape, generator=g) * 2 - 1
        yield x, (x + 0.3 * torch.randn(shape, generator=g)).clamp(-1.2, 1.2)  # some values outside [-1, 1]
        yield x, torch.rand(shape, generator=g) * 2 - 1  # unrelated images


@pytest.mark.parametrize("k", range(6))
def test_psnr_and_ssim_equal_torchmetrics(k):
    x_hat, x = list(pairs())[k]
    a, b = ((x_hat + 1) / 2).clamp(0, 1), ((x + 1) / 2).clamp(0, 1)
    ref_p = tm.peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ref_s = tm.structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")
    torch.testing.assert_close(psnr(x_hat, x), ref_p, rtol=0, atol=1e-5)  # dB: 1e-6 relative
    torch.testing.assert_close(psnr(x_hat, x), ref_p, rtol=1e-6, atol=0)
    torch.testing.assert_close(ssim(x_hat, x), ref_s, rtol=0, atol=1e-6)


def test_identical_images_and_the_window():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    w = gaussian_window()
    assert w.shape == (11, 11) and abs(float(w.sum()) - 1) < 1e-6 and torch.equal(w, w.T)
