"""Image-quality metrics with the fastMRI definitions (PSNR, SSIM, NMSE).

All functions take real-valued magnitude images ``gt`` (ground truth) and ``pred``
of the same shape, either one image ``[H, W]`` or a stack ``[S, H, W]``.  As in
fastMRI's ``evaluate.py``, the dynamic range is the ground truth's maximum
(``data_range = gt.max()``) and SSIM on a stack is the mean of the per-slice SSIMs.
"""
from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


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
    values = [structural_similarity(g, p, data_range=maxval) for g, p in zip(gt, pred)]
    return float(np.mean(values))


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All three fastMRI metrics as a dict: {'psnr', 'ssim', 'nmse'}."""
    return {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred), "nmse": nmse(gt, pred)}
