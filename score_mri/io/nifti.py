"""NIfTI output of reconstructed volumes: ``<file>.nii.gz`` beside fastMRI's ``reconstructions/<file>.h5``.

The array ``[slices, H, W]`` is stored as NIfTI axes (i, j, k) = (H, W, slice): rows are the readout, columns
the phase encodes, as the inputs' k-space is laid out. The affine is diagonal: the pixel spacing (mm) from the
input's ISMRMRD header (fastMRI ``ismrmrd_header`` or MRD ``/dataset/xml``: field of view over matrix size of
the reconstruction space, the slice thickness from its z field of view), else from a Siemens twix header,
else 1 mm (identity). No patient orientation is claimed (the scanner's position fields are not read).
"""
from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from score_mri.io.atomic import atomic_write
from score_mri.io.raw import xml_find as _find  # namespace-agnostic child lookup along a '/'-path

__all__ = ["spacing_of", "affine_of", "write_nifti", "write_beside"]

Spacing = tuple[float, float, float]


def _num(node: ET.Element | None, path: str) -> float | None:
    """A positive number at ``path`` below ``node``, else None."""
    el = _find(node, path)
    try:
        v = float(el.text) if el is not None and el.text else None
    except ValueError:
        return None
    return v if v is not None and np.isfinite(v) and v > 0 else None


def spacing_from_xml(xml: bytes | str) -> Spacing | None:
    """(row, column, slice) spacing in mm from an ISMRMRD XML header: x is the readout (rows), y the phase."""
    try:
        text = xml if isinstance(xml, str) else bytes(xml).rstrip(b"\0").decode("utf-8", "replace")
        root = ET.fromstring(text)
    except (ET.ParseError, TypeError, ValueError):
        return None
    enc = _find(root, "encoding")
    for space in ("reconSpace", "encodedSpace"):
        fx, fy = _num(enc, f"{space}/fieldOfView_mm/x"), _num(enc, f"{space}/fieldOfView_mm/y")
        nx, ny = _num(enc, f"{space}/matrixSize/x"), _num(enc, f"{space}/matrixSize/y")
        if fx and fy and nx and ny:
            fz, nz = _num(enc, f"{space}/fieldOfView_mm/z"), _num(enc, f"{space}/matrixSize/z") or 1.0
            return fx / nx, fy / ny, (fz / nz if fz else 1.0)
    return None


def _h5_xml(path: Path) -> bytes | None:
    """The ISMRMRD XML header of a fastMRI (``ismrmrd_header``) or MRD (``dataset/xml``) file, else None."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            for key in ("ismrmrd_header", "dataset/xml"):
                if key in f:
                    value = f[key][()]
                    if isinstance(value, np.ndarray):
                        value = value.ravel()[0] if value.dtype == object else value.tobytes()
                    return value.encode() if isinstance(value, str) else bytes(value)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None


def _twix_spacing(path: Path) -> Spacing | None:
    """(row, column, slice) spacing in mm of a twix file's first slice (after oversampling removal)."""
    try:
        from score_mri.io.raw import twix_spacing
        return twix_spacing(path)
    except Exception:  # any unreadable header: no spacing, the identity affine
        return None


def spacing_of(source: str | Path | None) -> Spacing | None:
    """Pixel spacing (mm) of an input file (fastMRI / MRD ``.h5``, ``.mrd``, twix ``.dat``), None if unknown."""
    if source is None:
        return None
    path = Path(source)
    if not path.is_file():
        return None
    if path.suffix.lower() == ".dat":
        return _twix_spacing(path)
    xml = _h5_xml(path)
    return spacing_from_xml(xml) if xml is not None else None


def affine_of(spacing: Spacing | None) -> np.ndarray:
    """Diagonal 4 x 4 affine with the spacing (identity when None)."""
    return np.diag([*(spacing or (1.0, 1.0, 1.0)), 1.0]).astype(np.float64)


def write_nifti(path: str | Path, volume: np.ndarray, spacing: Spacing | None = None) -> Path:
    """Write ``volume`` [slices, H, W] (magnitude, float32) as NIfTI-1 (axes H, W, slice; ``.nii.gz``
    compressed), atomically through ``.<name>.<pid>.tmp`` beside it."""
    import nibabel as nib
    path = Path(path)
    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise ValueError(f"write_nifti: expected [slices, H, W], got shape {vol.shape}")
    data = np.ascontiguousarray(np.transpose(np.abs(vol) if np.iscomplexobj(vol) else vol, (1, 2, 0)),
                                dtype=np.float32)
    img = nib.Nifti1Image(data, affine_of(spacing))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    payload = img.to_bytes()                                            # a single-file .nii image
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def write_beside(volume_file: str | Path, volume: np.ndarray, source: str | Path | None) -> Path:
    """``<volume_file stem>.nii.gz`` beside a volume file, spacing from the ``source`` input's header."""
    volume_file = Path(volume_file)
    return write_nifti(volume_file.with_name(volume_file.stem + ".nii.gz"), volume, spacing_of(source))
