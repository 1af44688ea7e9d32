"""Numerical helpers for score-MRI: FFT conventions, sampling masks, normalisation, lambda schedules and
data scalers. The measurement operators live in ``operators.py`` (re-exported here for the original's names).

Two FFT conventions exist, as in the original code:
  * single-coil (Algorithms 2, 3): ``fft2(x) = fftshift(F x)`` -- unnormalised, *no* ifftshift before
    the transform -- and ``ifft2(k) = F^-1 ifftshift(k)``; they are inverse to each other.
  * multi-coil (Algorithms 4, 5): the fastMRI centered orthonormal ``fft2_m``/``ifft2_m`` (= ``fft2c``).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from fastmri_utils import fft2c, ifft2c
from operators import (SENSE, MultiCoilCartesian, SingleCoilCartesian, data_consistency,  # noqa: F401
                       data_consistency_real, fft2, ifft2, kaczmarz_original)

__all__ = [
    "fft2", "ifft2", "fft2_m", "ifft2_m",
    "SingleCoilCartesian", "MultiCoilCartesian", "SENSE",
    "data_consistency", "data_consistency_real", "kaczmarz_original",
    "root_sum_of_squares", "crop_center", "clear",
    "normalize", "normalize_np", "normalize_complex", "normalize_complex_original",
    "lambda_schedule", "lambda_schedule_linear", "lambda_schedule_const",
    "get_data_scaler", "get_data_inverse_scaler", "restore_checkpoint",
    "MASK_TYPES", "get_mask",
]


# ----------------------------------------------------------------------------------------------------------
# FFT conventions
# ----------------------------------------------------------------------------------------------------------

def fft2_m(x: torch.Tensor) -> torch.Tensor:
    """Multi-coil k-space: centered orthonormal FFT (fastMRI ``fft2c``) of a complex tensor."""
    return fft2c(x)


def ifft2_m(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_m`: centered orthonormal inverse FFT (fastMRI ``ifft2c``)."""
    return ifft2c(k)


# ----------------------------------------------------------------------------------------------------------
# Image helpers
# ----------------------------------------------------------------------------------------------------------

ESPIRIT_MAX_CALIB = 24  # sigpy / BART default calibration width
ESPIRIT_MIN_CALIB = 12  # below this (kernel width 6) ESPIRiT has too few calibration rows to work with


def calib_width(mask: np.ndarray | torch.Tensor, cap: int = ESPIRIT_MAX_CALIB) -> int:
    """Largest ESPIRiT calibration width w <= cap whose square, as sigpy crops it, is fully sampled.

    sigpy's ``EspiritCalib`` takes the calibration region with ``sp.resize``: rows and columns
    [n//2 - w//2, n//2 - w//2 + w) of each k-space axis of length n. Only that exact square counts (another
    fully sampled square around the centre would let sigpy read unmeasured zeros into the calibration).
    """
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    m = np.abs(m.reshape(-1, *m.shape[-2:])).min(axis=0) > 0  # [H, W] sampled in every coil/batch item
    H, W = m.shape

    def fits(w: int) -> bool:  # the w x w square sigpy crops is fully sampled
        y0, x0 = H // 2 - w // 2, W // 2 - w // 2
        return bool(m[y0:y0 + w, x0:x0 + w].all())

    width = next((w for w in range(min(H, W, cap), 0, -1) if fits(w)), 0)
    if width < ESPIRIT_MIN_CALIB:
        raise ValueError(f"only a {width}x{width} fully sampled k-space centre: ESPIRiT needs at least "
                         f"{ESPIRIT_MIN_CALIB}x{ESPIRIT_MIN_CALIB} (use a larger --center_fraction)")
    return width


def root_sum_of_squares(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination sqrt(sum_c |x_c|^2) (fix: the original squares complex values)."""
    return torch.sqrt(torch.sum(torch.abs(x) ** 2, dim=dim))


def crop_center(img: torch.Tensor | np.ndarray, cropx: int, cropy: int):
    """Central crop [..., cropy, cropx] of an image [..., H, W]."""
    y, x = img.shape[-2:]
    startx = x // 2 - cropx // 2
    starty = y // 2 - cropy // 2
    return img[..., starty:starty + cropy, startx:startx + cropx]


def clear(x: torch.Tensor) -> np.ndarray:
    """Detached, squeezed NumPy copy of a tensor (for saving images)."""
    return x.detach().cpu().squeeze().numpy()


def normalize(img: torch.Tensor) -> torch.Tensor:
    """Affine map of a real tensor to [0, 1] over all its entries (a constant tensor maps to 0)."""
    img = img - torch.min(img)
    peak = torch.max(img)
    return img / peak if peak > 0 else torch.zeros_like(img)


def normalize_np(img: np.ndarray) -> np.ndarray:
    """NumPy version of :func:`normalize`."""
    img = img - np.min(img)
    peak = np.max(img)
    return img / peak if peak > 0 else np.zeros_like(img)


def normalize_complex(img: torch.Tensor) -> torch.Tensor:
    """Map the magnitude of a complex image to [0, 1] ((|x| - min) / (max - min)) and keep the phase (fix)."""
    magnitude = normalize(torch.abs(img))
    return magnitude * torch.sgn(img)


def normalize_complex_original(img: torch.Tensor) -> torch.Tensor:
    """The original's normalize_complex, which also squashes the phase into [0, 1] rad (faithful record)."""
    magnitude = normalize(torch.abs(img))
    phase = normalize(torch.angle(img))
    return magnitude * torch.exp(1j * phase)


# ----------------------------------------------------------------------------------------------------------
# Lambda schedules for the Kaczmarz step of Algorithm 5
# ----------------------------------------------------------------------------------------------------------

class lambda_schedule:
    """Step size lambda_i of the Kaczmarz update as a function of the iteration i (total iterations ``total``)."""

    def __init__(self, total: int = 2000):
        self.total = total

    def get_current_lambda(self, i: int) -> float:
        """lambda at iteration i."""
        raise NotImplementedError


class lambda_schedule_linear(lambda_schedule):
    """Linear schedule from start_lamb at i = 0 to end_lamb at i = total.

    The original always used total = 2000, so with N = 500 iterations lambda only falls to 0.8; pass
    ``total=N`` for the intended schedule.
    """

    def __init__(self, start_lamb: float = 1.0, end_lamb: float = 0.2, total: int = 2000):
        super().__init__(total)
        self.start_lamb = start_lamb
        self.end_lamb = end_lamb

    def get_current_lambda(self, i: int) -> float:
        """start + (end - start) * i / total."""
        return self.start_lamb + (self.end_lamb - self.start_lamb) * (i / self.total)


class lambda_schedule_const(lambda_schedule):
    """Constant schedule lambda_i = lamb."""

    def __init__(self, lamb: float = 1.0, total: int = 2000):
        super().__init__(total)
        self.lamb = lamb

    def get_current_lambda(self, i: int) -> float:
        """The constant lamb."""
        return self.lamb


# ----------------------------------------------------------------------------------------------------------
# Data scalers and checkpoints
# ----------------------------------------------------------------------------------------------------------

def get_data_scaler(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map data in [0, 1] to the model's range: [-1, 1] (2x - 1) when config.data.centered, else identity."""
    if config.data.centered:
        return lambda x: x * 2. - 1.
    return lambda x: x


def get_data_inverse_scaler(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inverse of :func:`get_data_scaler`: (x + 1) / 2 when config.data.centered, else identity."""
    if config.data.centered:
        return lambda x: (x + 1.) / 2.
    return lambda x: x


def restore_checkpoint(*args: Any, **kwargs: Any) -> Any:
    """Load a checkpoint: thin re-export of ``models.checkpoint.load_checkpoint`` (imported lazily)."""
    from models.checkpoint import load_checkpoint
    return load_checkpoint(*args, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Sampling masks (the original's get_mask, seeded)
# ----------------------------------------------------------------------------------------------------------

MASK_TYPES = ("gaussian1d", "uniform1d", "gaussian2d", "uniformrandom2d", "poisson")


def _sample_pattern(rng: np.random.RandomState, type: str, shape: tuple[int, int], size: int,
                    acc_factor: float, center_fraction: float) -> np.ndarray:
    """One 0/1 sampling pattern [H, W], drawing from ``rng`` with the original's calls in its order."""
    pattern = np.zeros(shape, dtype=np.float32)
    if type == "gaussian2d":
        n_samp = size ** 2 // acc_factor
        cov_factor = size * (1.5 / 128)
        mean = [size // 2, size // 2]
        cov = [[size * cov_factor, 0], [0, size * cov_factor]]
        samples = rng.multivariate_normal(mean, cov, int(n_samp))
        idx = np.clip(samples.astype(int), 0, size - 1)
        pattern[idx[:, 0], idx[:, 1]] = 1
    elif type == "uniformrandom2d":
        n_samp = size ** 2 // acc_factor
        samples = rng.choice(size * size, int(n_samp))
        flat = np.zeros(size * size, dtype=np.float32)
        flat[samples] = 1
        pattern[...] = flat.reshape(size, size)
    elif type == "gaussian1d":
        n_samp = size // acc_factor
        n_center = int(size * center_fraction)
        samples = rng.normal(loc=size // 2, scale=size * (15.0 / 128), size=int(n_samp * 1.2))
        cols = np.clip(samples.astype(int), 0, size - 1)
        pattern[:, cols] = 1
        c_from = size // 2 - n_center // 2
        pattern[:, c_from:c_from + n_center] = 1
    elif type == "uniform1d":
        n_samp = size // acc_factor
        n_center = int(size * center_fraction)
        cols = rng.choice(size, int(n_samp - n_center))
        pattern[:, cols] = 1
        c_from = size // 2 - n_center // 2
        pattern[:, c_from:c_from + n_center] = 1
    else:  # pragma: no cover - guarded by get_mask
        raise ValueError(f"unknown mask type {type!r}")
    return pattern


def _poisson_pattern(size: int, acc_factor: float, seed: int) -> np.ndarray:
    """Variable-density Poisson-disc pattern [size, size] from sigpy with an explicit seed."""
    from sigpy.mri import poisson  # heavy import (numba), only needed here
    return np.real(poisson((size, size), accel=acc_factor, seed=int(seed))).astype(np.float32)


def get_mask(img: torch.Tensor, size: int, batch_size: int, type: str = "gaussian2d", acc_factor: float = 8,
             center_fraction: float = 0.04, fix: bool = False, seed: int | None = None, *,
             faithful: bool = False) -> torch.Tensor:
    """Undersampling mask with the shape and dtype of ``img`` [B, C, H, W].

    One mask per batch item (shared by all coils), or one for the whole batch with ``fix``. Randomness comes
    from a ``np.random.RandomState(seed)`` created here and making the original's calls in its order, so
    ``seed=s`` reproduces the original after ``np.random.seed(s)``; ``seed=None`` draws fresh OS entropy.
    The global NumPy and torch random states are never touched. Types: gaussian1d, uniform1d (centre block of
    int(size * center_fraction) columns plus random columns), gaussian2d, uniformrandom2d (centre fraction
    ignored) and poisson (sigpy Poisson disc; batch item i uses seed + i, or seed alone with ``fix``; without a
    seed, seeds are drawn from the RandomState). ``faithful=True`` gives every batch item the original's
    Poisson mask, ``sigpy.mri.poisson((size, size), accel)`` with sigpy's default seed 0, whatever ``seed``.
    """
    if type not in MASK_TYPES:
        raise ValueError(f"unknown mask type {type!r}; expected one of {', '.join(MASK_TYPES)}")
    if batch_size > img.shape[0]:
        raise ValueError(f"batch_size {batch_size} exceeds the image batch {img.shape[0]}")
    shape = tuple(img.shape[-2:])
    if shape[-1] != size or (not type.endswith("1d") and shape[-2] != size):
        raise ValueError(f"mask size {size} does not match the image size {shape} for type {type!r}")
    rng = np.random.RandomState(seed)
    mask = torch.zeros_like(img)
    if type == "poisson":
        base_seed = seed if seed is not None else int(rng.randint(0, 2 ** 31 - 1 - batch_size))
        if faithful:  # the original: one poisson((size, size), accel) call, sigpy's default seed 0
            base_seed, fix = 0, True
    for i in range(1 if fix else batch_size):
        if type == "poisson":
            pattern = _poisson_pattern(size, acc_factor, base_seed + i)
        else:
            pattern = _sample_pattern(rng, type, shape, size, acc_factor, center_fraction)
        pattern = torch.from_numpy(pattern).to(device=img.device, dtype=img.dtype)  # [H, W]
        if fix:
            mask[...] = pattern
        else:
            mask[i, ...] = pattern
    return mask
