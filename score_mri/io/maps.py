"""User coil sensitivity maps (``--maps FILE``) for the SENSE and hybrid scripts: reading and shape checks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from score_mri.errors import UserError
from score_mri.io.readers import BART_COIL_DIM, cfl_to_kspace, check_finite, read_cfl, read_npy

__all__ = ["load_maps"]


def load_maps(path: str | Path, coils: int, shape: tuple[int, int]) -> np.ndarray:
    """User coil maps (``--maps``): .npy [C, H, W] or BART .cfl (coils in dim 3, the first map of dim 4).

    Returns complex64 [C, H, W]; UserError (one line) for a missing or unreadable file, NaN/Inf, all zeros,
    or a coil count or matrix size other than the k-space's ``coils`` x ``shape``.
    """
    path = Path(path)
    if path.suffix.lower() in (".cfl", ".hdr"):
        a = read_cfl(path)
        if a.ndim > BART_COIL_DIM + 1:  # BART ecalib: several sets of maps in dim 4; the first is the SENSE map
            a = a[(slice(None),) * (BART_COIL_DIM + 1) + (slice(0, 1),)]
        maps = cfl_to_kspace(a)
    elif path.suffix.lower() == ".npy":
        maps = read_npy(path, "coil maps")
        while maps.ndim > 3 and maps.shape[0] == 1:
            maps = maps[0]
    else:
        raise UserError(f"--maps {path}: expected a .npy [coils, H, W] or a BART .cfl file")
    if maps.ndim == 2 and coils == 1:
        maps = maps[None]
    if maps.ndim != 3:
        raise UserError(f"--maps {path}: expected coil maps [coils, H, W], got shape {tuple(maps.shape)}")
    check_finite(maps, f"coil maps {path}")
    if maps.shape[0] != coils:
        raise UserError(f"--maps {path} has {maps.shape[0]} coils, the k-space has {coils}")
    if tuple(maps.shape[-2:]) != tuple(shape):
        raise UserError(f"--maps {path} is {maps.shape[-2]}x{maps.shape[-1]}, the image is {shape[0]}x{shape[1]}")
    if not np.abs(maps).max() > 0:
        raise UserError(f"--maps {path}: the coil maps are all zeros")
    return np.ascontiguousarray(maps, dtype=np.complex64)
