"""Image-quality metrics with the fastMRI definitions (PSNR, SSIM, NMSE).

All functions take real-valued magnitude images ``gt`` (ground truth) and ``pred``
of the same shape, either one image ``[H, W]`` or a stack ``[S, H, W]``.  As in
fastMRI's ``evaluate.py``, the dynamic range is the ground truth's maximum
(``data_range = gt.max()``) and SSIM on a stack is the mean of the per-slice SSIMs.
"""
from __future__ import annotations

import numpy as np

_WIN = 7                  # skimage's default window: 7 x 7 uniform
_K1, _K2 = 0.01, 0.03     # skimage's (and fastMRI's) constants


def _check(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return both arrays as float64 after checking they are real and of equal shape."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if np.iscomplexobj(gt) or np.iscomplexobj(pred):
        raise ValueError("metrics need real (magnitude) images; take np.abs first")
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
    if gt.ndim not in (2, 3):
        raise ValueError(f"expected [H, W] or [S, H, W] images, got shape {gt.shape}")
    return gt.astype(np.float64), pred.astype(np.float64)


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error, mean((gt - pred)^2)."""
    gt, pred = _check(gt, pred)
    return float(np.mean((gt - pred) ** 2))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised MSE, ||gt - pred||^2 / ||gt||^2."""
    gt, pred = _check(gt, pred)
    return float(np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(maxval^2 / MSE) with maxval = gt.max()."""
    gt, pred = _check(gt, pred)
    maxval = float(gt.max()) if maxval is None else float(maxval)
    err = float(np.mean((gt - pred) ** 2))
    if err == 0.0:
        return float("inf")
    return float(10.0 * np.log10(maxval ** 2 / err))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Structural similarity (skimage defaults, data_range = gt.max()), averaged over slices."""
    gt, pred = _check(gt, pred)
    maxval = float(gt.max()) if maxval is None else float(maxval)
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    values = [_ssim_2d(g, p, maxval) for g, p in zip(gt, pred)]
    return float(np.mean(values))


def _window_mean(a: np.ndarray) -> np.ndarray:
    """Mean over every 7 x 7 window lying inside ``a`` [H, W] -> [H - 6, W - 6] (the region SSIM averages)."""
    h, w = a.shape
    rows = sum(a[i:h - _WIN + 1 + i] for i in range(_WIN)) / _WIN
    return sum(rows[:, j:w - _WIN + 1 + j] for j in range(_WIN)) / _WIN


def _ssim_2d(gt: np.ndarray, pred: np.ndarray, data_range: float) -> float:
    """``skimage.metrics.structural_similarity(gt, pred, data_range=...)`` with its defaults (7 x 7 uniform
    window, sample covariance), computed on the interior windows it averages, without importing scipy."""
    if min(gt.shape) < _WIN:  # skimage's own checks and message
        from skimage.metrics import structural_similarity
        return float(structural_similarity(gt, pred, data_range=data_range))
    cov_norm = _WIN ** 2 / (_WIN ** 2 - 1)
    ux, uy = _window_mean(gt), _window_mean(pred)
    vx = cov_norm * (_window_mean(gt * gt) - ux * ux)
    vy = cov_norm * (_window_mean(pred * pred) - uy * uy)
    vxy = cov_norm * (_window_mean(gt * pred) - ux * uy)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All three fastMRI metrics as a dict: {'psnr', 'ssim', 'nmse'}."""
    return {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred), "nmse": nmse(gt, pred)}
