"""metrics.py follows the fastMRI definitions (PSNR/SSIM with data_range = gt.max(), NMSE)."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from score_mri import metrics


@pytest.fixture
def pair():
    rng = np.random.RandomState(0)
    gt = rng.rand(32, 32) * 0.8                          # max < 1: data_range must be gt.max(), not 1
    pred = gt + 0.05 * rng.randn(32, 32)
    return gt, pred


def test_psnr_matches_skimage_and_closed_form(pair):
    gt, pred = pair
    ref = peak_signal_noise_ratio(gt, pred, data_range=gt.max())
    assert metrics.psnr(gt, pred) == pytest.approx(ref, rel=1e-12)
    assert metrics.psnr(gt, pred) == pytest.approx(10 * np.log10(gt.max() ** 2 / np.mean((gt - pred) ** 2)))
    assert metrics.psnr(gt, pred) != pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0))


def test_psnr_known_value():
    gt = np.zeros((8, 8))
    gt[0, 0] = 2.0                                       # max 2
    pred = gt + 0.1                                      # mse 0.01 -> 10 log10(4 / 0.01)
    assert metrics.psnr(gt, pred) == pytest.approx(10 * np.log10(400.0))
    assert metrics.psnr(gt, gt) == float("inf")


def test_ssim_matches_skimage(pair):
    gt, pred = pair
    ref = structural_similarity(gt, pred, data_range=gt.max())
    assert metrics.ssim(gt, pred) == pytest.approx(ref, rel=1e-12)
    assert metrics.ssim(gt, gt) == pytest.approx(1.0)
    stack_gt, stack_pred = np.stack([gt, 2 * gt]), np.stack([pred, 2 * pred])
    vol_range = stack_gt.max()                           # fastMRI: one range for the whole volume
    expected = np.mean([structural_similarity(g, p, data_range=vol_range) for g, p in zip(stack_gt, stack_pred)])
    assert metrics.ssim(stack_gt, stack_pred) == pytest.approx(expected, rel=1e-12)


def test_nmse_definition(pair):
    gt, pred = pair
    assert metrics.nmse(gt, pred) == pytest.approx(np.sum((gt - pred) ** 2) / np.sum(gt ** 2))
    assert metrics.nmse(gt, gt) == 0.0
    assert metrics.nmse(np.ones((4, 4)), np.zeros((4, 4))) == pytest.approx(1.0)
    assert metrics.mse(np.ones((4, 4)), np.zeros((4, 4))) == pytest.approx(1.0)


def test_evaluate_and_bad_input(pair):
    gt, pred = pair
    out = metrics.evaluate(gt, pred)
    assert set(out) == {"psnr", "ssim", "nmse"}
    assert out["psnr"] == metrics.psnr(gt, pred)
    with pytest.raises(ValueError):
        metrics.psnr(gt, pred[:-1])
    with pytest.raises(ValueError):
        metrics.ssim(gt.astype(complex), pred)
