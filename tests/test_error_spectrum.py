"""benchmarks/error_spectrum.py: the noise floor, the noise-limited PSNR and the band split on known data."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from score_mri.physics.fft import ifft2c

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import error_spectrum as es  # noqa: E402


def smooth_image(n: int = 96) -> np.ndarray:
    """A smooth blob image in [0, 1]."""
    y, x = np.mgrid[-1:1:n * 1j, -1:1:n * 1j]
    blobs = np.exp(-(x ** 2 + 2 * y ** 2) * 4) + 0.5 * np.exp(-((x - 0.3) ** 2 + y ** 2) * 20)
    return (0.2 + 0.8 * blobs).astype(np.float32)              # positive: the magnitude changes nothing


def column_mask(n: int, keep_every: int = 3) -> np.ndarray:
    """Every ``keep_every``-th column plus a centre block."""
    m = np.zeros((n, n), np.float32)
    m[:, ::keep_every] = 1
    m[:, n // 2 - 4:n // 2 + 4] = 1
    return m


@pytest.mark.parametrize("std", [0.01, 0.03])
def test_floor_and_ceiling_of_a_noisy_ground_truth(std):
    """Ground truth = smooth image + white noise: the floor is the noise power, and a reconstruction that keeps
    the measured samples and has the noise-free image elsewhere reaches the noise-limited PSNR."""
    n = 96
    clean = smooth_image(n)
    gt = clean + np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32) * std
    mask = column_mask(n)
    k = np.where(mask > 0, es.kspace(gt), es.kspace(clean)).astype(np.complex64)
    ideal = np.real(ifft2c(torch.from_numpy(k)).numpy())
    out = es.spectrum(gt, mask, {"ideal": ideal, "gt": gt})
    assert out["noise_floor"] == pytest.approx(std ** 2, rel=0.2)
    assert out["psnr"]["ideal"] == pytest.approx(out["noise_limited_psnr"], abs=0.5)
    assert out["psnr"]["gt"] == np.inf                                    # the truth itself: no error
    assert out["unmeasured_fraction"] == pytest.approx(1 - mask.mean())
    # the ideal reconstruction's error sits at the floor in every band with enough samples to average
    for band in (b for b in out["bands"] if b["samples"] >= 300):
        assert band["ideal_error"] == pytest.approx(std ** 2, rel=0.35), band


def test_psnr_from_the_kspace_error_is_the_image_psnr():
    from score_mri import metrics
    gt = smooth_image(64)
    pred = gt + 0.02 * np.random.default_rng(1).standard_normal(gt.shape).astype(np.float32)
    out = es.spectrum(gt, np.ones_like(gt), {"pred": pred})
    assert out["psnr"]["pred"] == pytest.approx(metrics.psnr(gt, np.abs(pred)), abs=1e-3)
