"""Classical baselines for the benchmarks: zero-filled, sigpy L1-wavelet, BART ``pics -l1``.

Every baseline takes the measured k-space ``y`` ([C, H, W] complex, zeros where not sampled) in
the centered orthonormal convention, ``y = mask * fft2c(sens * x)`` (single-coil: C = 1 and
sens = 1), plus the sampling ``mask`` ([H, W], 1 = sampled), and returns a complex image [H, W].
The single-coil scripts use the original's shifted FFT instead; with an even image size the two
k-spaces differ only by a per-sample sign (and a global scale), so a mask samples the same
frequencies and the reconstructed magnitudes agree: metrics are always on magnitude images.

Multi-coil baselines estimate ESPIRiT maps from the measured (fully sampled) centre only, never
from the fully sampled k-space (Algorithm 5 fix, README "Differences from the original").
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import sigpy
import sigpy.mri

from score_mri.io.readers import read_cfl, write_cfl
from utils import ESPIRIT_MAX_CALIB, calib_width  # noqa: F401 (re-exported for the benchmarks)

# lambda per acquisition setup, found by benchmarks/recon_quality.py's grid search on ONE image
# (samples/real/retrospective/001, gaussian1d x4, seed 0, as single-coil data and as simulated 8-coil data;
# see benchmarks/README.md), then fixed for every other case.
SIGPY_LAMBDA = {"single-coil": 1e-3, "multi-coil": 3e-5}
BART_LAMBDA = {"single-coil": 1e-3, "multi-coil": 3e-4}
LAMBDA_GRID = {"sigpy_l1": [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
               "bart_pics": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]}
N_COILS_TUNE = 8


# ----------------------------------------------------------------------------- forward model
def fft2c(x: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D FFT over the last two axes (fastMRI / sigpy / BART convention)."""
    return sigpy.fft(x, axes=(-2, -1), center=True, norm="ortho")


def ifft2c(k: np.ndarray) -> np.ndarray:
    """Inverse of :func:`fft2c`."""
    return sigpy.ifft(k, axes=(-2, -1), center=True, norm="ortho")


def measure(x: np.ndarray, mask: np.ndarray, sens: np.ndarray | None = None) -> np.ndarray:
    """Measured k-space y = mask * fft2c(sens * x) as [C, H, W]; ``x`` [H, W] or coil images [C, H, W]."""
    x = np.asarray(x, np.complex128)
    if sens is not None:
        x = sens * x[None]  # [C, H, W]
    elif x.ndim == 2:
        x = x[None]  # [1, H, W]
    return fft2c(x) * mask


def root_sum_of_squares(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """sqrt(sum_c |x_c|^2) over the coil axis."""
    return np.sqrt(np.sum(np.abs(x) ** 2, axis=axis))


def simulated_sens(n_coils: int, shape: tuple[int, int]) -> np.ndarray:
    """sigpy birdcage coil maps [C, H, W], normalised to root-sum-of-squares 1 (synthetic multi-coil data)."""
    sens = sigpy.mri.birdcage_maps((n_coils, *shape))
    return sens / root_sum_of_squares(sens)


# ----------------------------------------------------------------------------- baselines
def zero_filled(y: np.ndarray) -> np.ndarray:
    """Zero-filled reconstruction: ifft2c(y), root-sum-of-squares over coils when C > 1."""
    x = ifft2c(y)  # [C, H, W]
    return x[0] if x.shape[0] == 1 else root_sum_of_squares(x).astype(x.dtype)


def espirit_maps(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sigpy ESPIRiT maps [C, H, W] from the measured centre (sigpy EspiritCalib defaults otherwise)."""
    app = sigpy.mri.app.EspiritCalib(y, calib_width=calib_width(mask), show_pbar=False)
    return app.run()


def sigpy_l1(y: np.ndarray, mask: np.ndarray, lamda: float = SIGPY_LAMBDA["single-coil"],
             sens: np.ndarray | None = None, max_iter: int = 100) -> np.ndarray:
    """L1-wavelet CS (Lustig 2007): argmin_x 0.5||P F S x - y||^2 + lamda ||W x||_1 with sigpy.

    Single-coil when y has one coil and no ``sens`` (sens = 1); otherwise ESPIRiT maps from the
    measured centre are used unless ``sens`` is given.
    """
    if sens is None:
        sens = np.ones_like(y) if y.shape[0] == 1 else espirit_maps(y, mask)
    app = sigpy.mri.app.L1WaveletRecon(y, sens, lamda, weights=mask, max_iter=max_iter, show_pbar=False)
    return app.run()


# ----------------------------------------------------------------------------- BART
def bart_available() -> bool:
    """True when the ``bart`` command is on PATH."""
    return shutil.which("bart") is not None


def _bart(*args: str, cwd: str) -> None:
    """Run one BART command, raising with its message when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(["bart", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bart {args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")


def bart_pics(y: np.ndarray, mask: np.ndarray, lamda: float = BART_LAMBDA["single-coil"],
              sens: np.ndarray | None = None, iters: int = 100) -> np.ndarray:
    """BART ``pics -l1 -r lamda`` (wavelet L1, re-scaled output); multi-coil maps from ``ecalib -m1``."""
    if not bart_available():
        raise RuntimeError("bart is not on PATH (apt-get install bart)")
    C, H, W = y.shape
    with tempfile.TemporaryDirectory(prefix="bart_") as tmp:
        write_cfl(Path(tmp) / "ksp", np.moveaxis(y, 0, -1)[:, :, None, :])  # [H, W, 1, C]
        if sens is not None:
            write_cfl(Path(tmp) / "sens", np.moveaxis(sens, 0, -1)[:, :, None, :])
        elif C == 1:
            write_cfl(Path(tmp) / "sens", np.ones((H, W, 1, 1), np.complex64))
        else:
            r = calib_width(mask)
            _bart("ecalib", "-m1", "-r", str(r), "ksp", "sens", cwd=tmp)
        write_cfl(Path(tmp) / "pat", np.broadcast_to(mask, (H, W))[:, :, None, None])
        _bart("pics", "-S", "-l1", "-r", str(lamda), "-i", str(iters), "-p", "pat", "ksp", "sens", "out",
              cwd=tmp)
        return read_cfl(Path(tmp) / "out").reshape(H, W)
