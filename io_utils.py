"""Readers and writers for the inputs of the inference scripts.

- ``.npy``: an image (``[H, W]`` real or complex, or ``[coils, H, W]`` complex).
- fastMRI ``.h5``: dataset ``kspace`` of shape ``[slices, H, W]`` (single-coil) or
  ``[slices, coils, H, W]`` (multi-coil), optional dataset ``mask`` (``[W]`` or ``[H, W]``).
- BART ``.cfl`` + ``.hdr``: complex64 in column-major (Fortran) order; the header lists
  the dimensions.  BART's dimension 0-2 are space (read, phase 1, phase 2) and 3 the coils.

Every reader raises :class:`UserError` with a one-line message on bad input.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

BART_COIL_DIM = 3


class UserError(Exception):
    """Bad user input; the scripts print the message on one line and exit with status 2."""


def check_finite(a: np.ndarray, what: str) -> None:
    """Raise UserError if ``a`` contains NaN or Inf."""
    if not np.all(np.isfinite(a)):
        raise UserError(f"{what} contains NaN or Inf values")


def read_npy(path: str | Path, what: str = "input") -> np.ndarray:
    """Load a numeric ``.npy`` array (no pickles) or raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # a corrupt or non-npy file: report it in one line
        raise UserError(f"cannot read {what} {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise UserError(f"{what} {path} is not a numeric array (dtype {getattr(a, 'dtype', type(a))})")
    return a


# --------------------------------------------------------------------------- BART .cfl / .hdr

def _cfl_base(path: str | Path) -> Path:
    """Strip a ``.cfl`` / ``.hdr`` suffix: BART names a file pair by its base name."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def read_cfl(path: str | Path) -> np.ndarray:
    """Read a BART ``.cfl``/``.hdr`` pair into a complex64 array with BART's dimension order."""
    base = _cfl_base(path)
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for f in (hdr, cfl):
        if not f.is_file():
            raise UserError(f"BART file not found: {f}")
    try:
        lines = [ln.strip() for ln in hdr.read_text().splitlines()]
        dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError, UnicodeDecodeError):
        raise UserError(f"cannot read BART header {hdr}: no '# Dimensions' line with integers") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"BART header {hdr} has invalid dimensions {dims}")
    count = int(np.prod(dims))
    data = np.fromfile(cfl, dtype=np.complex64)
    if data.size != count:
        raise UserError(f"BART file {cfl} holds {data.size} values, header {hdr} says {count} {dims}")
    return data.reshape(dims, order="F")


def write_cfl(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a BART ``.cfl``/``.hdr`` pair (complex64, column-major)."""
    base = _cfl_base(path)
    array = np.asarray(array)
    dims = list(array.shape) or [1]
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.asarray(array, dtype=np.complex64).reshape(-1, order="F").tofile(base.with_suffix(".cfl"))


def cfl_to_kspace(ksp: np.ndarray) -> np.ndarray:
    """BART k-space (dims 0-2 space, 3 coils) -> ``[coils, H, W]``: two non-singleton spatial dims."""
    shape = tuple(ksp.shape) + (1,) * max(0, BART_COIL_DIM + 1 - ksp.ndim)
    extra = [d for d, n in enumerate(shape) if d > BART_COIL_DIM and n > 1]
    if extra:
        raise UserError(f"BART k-space has non-singleton dimensions {extra} (shape {shape}); "
                        f"expected space in dims 0-2 and coils in dim {BART_COIL_DIM} only")
    spatial = [d for d in range(BART_COIL_DIM) if shape[d] > 1]
    if len(spatial) != 2:
        raise UserError(f"BART k-space must have exactly two non-singleton spatial dims (0-2), got shape {shape}")
    ksp = ksp.reshape(shape[:BART_COIL_DIM + 1])           # [x, y, z, coils], trailing singletons dropped
    ksp = ksp.squeeze(axis=tuple(d for d in range(BART_COIL_DIM) if d not in spatial))  # [H, W, coils]
    return np.ascontiguousarray(np.moveaxis(ksp, -1, 0))   # [coils, H, W]


# --------------------------------------------------------------------------- fastMRI .h5

def _h5_recon_size(f) -> tuple[int, int] | None:
    """fastMRI's crop size: the stored reconstruction's shape, else the ISMRMRD header's reconSpace matrix."""
    for key in ("reconstruction_rss", "reconstruction_esc"):
        if key in f and f[key].ndim >= 2:
            return tuple(int(v) for v in f[key].shape[-2:])
    if "ismrmrd_header" in f:
        import xml.etree.ElementTree as ET
        try:
            xml = f["ismrmrd_header"][()]
            xml = xml.encode() if isinstance(xml, str) else bytes(xml if isinstance(xml, bytes) else
                                                                  np.asarray(xml).tobytes())
            root = ET.fromstring(xml.rstrip(b"\0"))
            ns = {"m": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
            q = "m:" if ns else ""
            size = root.find(f"{q}encoding/{q}reconSpace/{q}matrixSize", ns)
            return int(size.find(f"{q}x", ns).text), int(size.find(f"{q}y", ns).text)
        except (ET.ParseError, AttributeError, TypeError, ValueError):
            return None
    return None


def read_h5(path: str | Path, slice_index: int | None = None
            ) -> tuple[np.ndarray, np.ndarray | None, int, tuple[int, int] | None]:
    """One slice of a fastMRI file: (kspace ``[coils, H, W]``, stored mask or None, slice, crop size or None).

    The crop size is what fastMRI crops the image to: the shape of the stored reconstruction, else the
    header's reconSpace matrix size (x, y), else None.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"cannot read HDF5 file {path}: {e}".splitlines()[0]) from None
    with f:
        if "kspace" not in f:
            raise UserError(f"{path} has no 'kspace' dataset (keys: {sorted(f.keys())})")
        kspace = f["kspace"]
        if kspace.ndim not in (3, 4):
            raise UserError(f"{path}: 'kspace' must be [slices, H, W] or [slices, coils, H, W], "
                            f"got shape {kspace.shape}")
        n = kspace.shape[0]
        if slice_index is None:
            slice_index = n // 2
        if not -n <= slice_index < n:
            raise UserError(f"--slice {slice_index} out of range: {path} has {n} slices")
        slice_index %= n
        ksp = np.asarray(kspace[slice_index])
        mask = np.asarray(f["mask"]) if "mask" in f else None
        recon_size = _h5_recon_size(f)
    if not np.iscomplexobj(ksp):
        raise UserError(f"{path}: 'kspace' must be complex, got dtype {ksp.dtype}")
    if ksp.ndim == 2:
        ksp = ksp[None]                                    # [1, H, W]
    return ksp.astype(np.complex64), mask, slice_index, recon_size
