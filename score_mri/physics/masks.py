"""Undersampling masks (the original's ``get_mask``, seeded) and the ESPIRiT calibration width of a mask."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["MASK_TYPES", "get_mask", "centre_block", "poisson_pattern", "calib_width", "espirit_kernel", "ESPIRIT_MAX_CALIB",
           "ESPIRIT_MIN_CALIB"]

ESPIRIT_MAX_CALIB = 24  # sigpy / BART default calibration width
ESPIRIT_MIN_CALIB = 8   # below this even a smaller kernel (``espirit_kernel``) leaves too few calibration rows
ESPIRIT_KERNEL = 6      # sigpy / BART default kernel width (calibration widths >= 12)


def espirit_kernel(width: int) -> int:
    """ESPIRiT kernel width for a calibration width: the default 6, narrower (width // 2) below 12."""
    return ESPIRIT_KERNEL if width >= 2 * ESPIRIT_KERNEL else max(3, int(width) // 2)


def centre_block(mask: np.ndarray | torch.Tensor, cap: int | None = None) -> int:
    """Largest w (<= cap) whose centred w x w k-space square, as sigpy crops it, is fully sampled (0: none).

    The square is rows and columns [n//2 - w//2, n//2 - w//2 + w) of each axis of length n (sigpy's
    ``sp.resize``), sampled in every coil and batch entry. Only that exact square counts (another fully
    sampled square around the centre would let sigpy read unmeasured zeros into the calibration).
    """
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    m = np.abs(m.reshape(-1, *m.shape[-2:])).min(axis=0) > 0  # [H, W] sampled in every coil/batch item
    H, W = m.shape

    def fits(w: int) -> bool:
        y0, x0 = H // 2 - w // 2, W // 2 - w // 2
        return bool(m[y0:y0 + w, x0:x0 + w].all())

    return next((w for w in range(min(H, W, cap or min(H, W)), 0, -1) if fits(w)), 0)


def calib_width(mask: np.ndarray | torch.Tensor, cap: int = ESPIRIT_MAX_CALIB) -> int:
    """Largest ESPIRiT calibration width w <= cap whose square, as sigpy crops it, is fully sampled.

    sigpy's ``EspiritCalib`` takes the calibration region with ``sp.resize``: rows and columns
    [n//2 - w//2, n//2 - w//2 + w) of each k-space axis of length n. Only that exact square counts (another
    fully sampled square around the centre would let sigpy read unmeasured zeros into the calibration).
    """
    width = centre_block(mask, cap)
    if width < ESPIRIT_MIN_CALIB:
        raise ValueError(f"no calibration region: only a {width}x{width} fully sampled k-space centre, ESPIRiT "
                         f"needs at least {ESPIRIT_MIN_CALIB}x{ESPIRIT_MIN_CALIB}: pass --maps FILE (coil maps "
                         f"[C, H, W]) or use a larger --center_fraction")
    return width

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


def poisson_pattern(shape: tuple[int, int], acc_factor: float, seed: int,
                    calib: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Variable-density Poisson-disc pattern [H, W] (sigpy, explicit seed) with a fully sampled ``calib`` centre."""
    from sigpy.mri import poisson  # heavy import (numba), only needed here
    calib = tuple(int(c) for c in calib)
    pattern = np.real(poisson(tuple(shape), accel=acc_factor, calib=calib, seed=int(seed))).astype(np.float32)
    H, W = shape
    h, w = calib
    if h > 0 and w > 0:  # the block exactly where centred calibration crops look: [n//2 - c//2, n//2 - c//2 + c)
        pattern[H // 2 - h // 2:H // 2 - h // 2 + h, W // 2 - w // 2:W // 2 - w // 2 + w] = 1
    return pattern


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
            pattern = poisson_pattern((size, size), acc_factor, base_seed + i)
        else:
            pattern = _sample_pattern(rng, type, shape, size, acc_factor, center_fraction)
        pattern = torch.from_numpy(pattern).to(device=img.device, dtype=img.dtype)  # [H, W]
        if fix:
            mask[...] = pattern
        else:
            mask[i, ...] = pattern
    return mask
