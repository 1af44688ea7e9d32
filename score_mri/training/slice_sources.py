"""Where training slices come from: config defaults, readers of fastMRI .h5, .npy/.png and NIfTI slices,
per-slice normalisation, and the listing of a data set's slices (``datasets.py`` serves them).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from score_mri.physics.fft import center_crop
from score_mri.io.readers import ifft2c_np

DATA_DEFAULTS = {
    "dataset": "fastmri_knee",
    "root": "",
    "nifti_files": (),
    "slice_axes": (0, 1, 2),
    "h5_key": "auto",            # 'auto' | 'reconstruction_esc' | 'reconstruction_rss' | 'kspace'
    "kspace_part": "abs",        # for h5_key='kspace': 'abs' (RSS over coils) | 'real' | 'imag' | 'real_imag'
    "normalize": "minmax",       # 'minmax' (each slice to [0, 1]; real/imag parts by the peak magnitude) | 'none'
    "resize": "none",            # 'none' | 'fit' (longer side -> image_size) | 'cover' (shorter side -> image_size)
    "random_flip": True,         # left-right flip with probability 1/2
    "vertical_flip": False,      # up-down flip with probability 1/2
    "random_crop": True,         # random (train) vs centre (eval) crop/pad position
    "rot_deg": 0.0,              # rotation angle ~ U(-rot_deg, rot_deg)
    "scale_range": (1.0, 1.0),   # zoom factor ~ U(lo, hi)
    "gamma_range": (1.0, 1.0),   # intensity gamma ~ logU(lo, hi), x -> x**gamma
    "remap_prob": 0.0,           # probability of a random monotone intensity curve (contrast change)
    "elastic_prob": 0.0,         # probability of a smooth random displacement field ...
    "elastic_alpha": 0.0,        # ... of this peak size in pixels ...
    "elastic_sigma": 12.0,       # ... and this smoothness (Gaussian width in pixels)
    "noise_prob": 0.0,           # probability of Rician noise (white complex noise in k-space, then magnitude) ...
    "noise_max": 0.0,            # ... with standard deviation ~ U(0, noise_max) of the [0, 1] image
    "eval_every": 10,            # every eval_every-th slice is held out (0: no held-out split)
    "min_foreground": 0.05,      # NIfTI: skip slices with fewer pixels above foreground_level*max ...
    "foreground_level": 0.1,     # ... (max of the volume)
    "volume_cache": 8,           # NIfTI volumes kept in memory
}


class DatasetError(ValueError):
    """A user-facing data problem (missing folder, no slices, unreadable file)."""


def data_option(config, name: str):
    """``config.data.<name>``, or its default from ``DATA_DEFAULTS`` when the config lacks it."""
    return config.data.get(name, DATA_DEFAULTS[name])


# ----------------------------------------------------------------------------------------------
# Slice readers. An item is a tuple (kind, path, *indices); readers return a 2-D float32 array.
# ----------------------------------------------------------------------------------------------

def normalize_slice(x: np.ndarray) -> np.ndarray:
    """Min/max normalisation of one slice to [0, 1] (the original's ``normalize_np``); constant -> zeros."""
    x = np.asarray(x, dtype=np.float32)
    lo, hi = float(x.min()), float(x.max())
    if not hi > lo:  # constant slice (also catches NaN)
        return np.zeros_like(x) if np.isfinite(lo) else x
    with np.errstate(invalid="ignore"):  # an Inf becomes NaN, which SliceDataset.read reports
        return (x - lo) / (hi - lo)


def _as_stored(x: np.ndarray) -> np.ndarray:
    """The slice in its stored units (``normalize='none'``), as float32."""
    return np.asarray(x, dtype=np.float32)


NORMALIZE_MODES = ("minmax", "none")


def normalizer(mode: str):
    """The per-slice normalisation of ``data.normalize``."""
    if mode == "minmax":
        return normalize_slice
    if mode == "none":
        return _as_stored
    raise DatasetError(f"config.data.normalize must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")


def describe(item: tuple) -> str:
    """'file, slice s' (and coil / part / axis) for messages about one slice."""
    kind, path, *idx = item
    if kind == "h5":
        key, s, coil, part = idx
        extra = f", coil {coil} ({part})" if part != "abs" else ""
        return f"{path} ({key}), slice {s}{extra}"
    if kind == "npy":
        return f"{path}, slice {idx[0]}" if idx[0] >= 0 else path
    if kind == "nifti":
        return f"{path}, axis {idx[0]} slice {idx[1]}"
    return path


def read_h5_slice(path: str, key: str, s: int, coil: int, part: str, image_size: int, norm) -> np.ndarray:
    import h5py
    with h5py.File(path, "r") as f:
        x = f[key][s]
    if key != "kspace":
        return norm(x)
    img = center_crop(ifft2c_np(x), (image_size, image_size))  # [H, W] or [coils, H, W] complex
    if part == "abs":
        mag = np.sqrt((np.abs(img) ** 2).sum(axis=0)) if img.ndim == 3 else np.abs(img)
        return norm(mag)
    if img.ndim == 3:
        img = img[coil]
    x = (img.real if part == "real" else img.imag).astype(np.float32)
    if norm is _as_stored:
        return x
    # real / imaginary part of the complex image scaled by its peak magnitude: values in [-1, 1]
    return x / (float(np.abs(img).max()) or 1.0)


def read_npy_slice(path: str, s: int, norm) -> np.ndarray:
    x = np.load(path, mmap_mode="r")
    x = x[s] if s >= 0 else x
    return norm(np.abs(x) if np.iscomplexobj(x) else x)


def read_png_slice(path: str, norm) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ("L", "I", "I;16", "F"):
            im = im.convert("L")
        return norm(np.asarray(im, dtype=np.float32))


@functools.lru_cache(maxsize=None)
def volume_loader(maxsize: int):
    """One LRU cache of loaded NIfTI volumes per cache size."""

    @functools.lru_cache(maxsize=maxsize)
    def load(path: str) -> np.ndarray:
        return load_nifti(path)

    return load


def load_nifti(path: str) -> np.ndarray:
    import nibabel as nib
    try:
        vol = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except Exception as e:  # nibabel raises many types for unreadable files
        raise DatasetError(f"cannot read NIfTI file {path}: {e}") from None
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 4:  # 4-D series: first volume
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise DatasetError(f"{path}: expected a 3-D volume, got shape {vol.shape}")
    return vol


def h5_items(files: Sequence[Path], config) -> list[tuple]:
    import h5py
    key_opt, part = data_option(config, "h5_key"), data_option(config, "kspace_part")
    if part not in ("abs", "real", "imag", "real_imag"):
        raise DatasetError(f"config.data.kspace_part must be abs, real, imag or real_imag, got {part!r}")
    items = []
    for p in files:
        try:
            with h5py.File(p, "r") as f:
                if key_opt == "auto":
                    key = next((k for k in ("reconstruction_esc", "reconstruction_rss", "kspace") if k in f), None)
                else:
                    key = key_opt if key_opt in f else None
                if key is None:
                    raise DatasetError(f"{p}: no dataset {key_opt!r} (keys: {sorted(f.keys())})")
                shape = f[key].shape
        except OSError as e:
            raise DatasetError(f"cannot read {p}: {e}") from None
        multicoil = key == "kspace" and len(shape) == 4
        coils = range(shape[1]) if (multicoil and part != "abs") else [0]
        parts = ["real", "imag"] if part == "real_imag" else [part]
        for s in range(shape[0]):
            for c in coils:
                for pt in parts:
                    items.append(("h5", str(p), key, s, c, pt))
    return items


def folder_items(root: Path) -> list[tuple]:
    items = []
    for p in sorted(root.rglob("*")):
        suffix = p.suffix.lower()
        if suffix == ".npy":
            try:
                shape = np.load(p, mmap_mode="r").shape
            except (ValueError, OSError) as e:
                raise DatasetError(f"cannot read {p}: {e}") from None
            if len(shape) == 2:
                items.append(("npy", str(p), -1))
            elif len(shape) == 3:
                items.extend(("npy", str(p), s) for s in range(shape[0]))
            else:
                raise DatasetError(f"{p}: expected a [H, W] or [slices, H, W] array, got shape {shape}")
        elif suffix == ".png":
            items.append(("png", str(p)))
    return items


def nifti_items(files: Sequence[Path], config) -> list[tuple]:
    axes = tuple(int(a) for a in data_option(config, "slice_axes"))
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise DatasetError(f"config.data.slice_axes must be a non-empty subset of (0, 1, 2), got {axes}")
    min_fg, level = float(data_option(config, "min_foreground")), float(data_option(config, "foreground_level"))
    items = []
    for p in files:
        vol = load_nifti(str(p))
        thr = level * float(vol.max())
        fg = vol > thr
        for a in axes:
            other = tuple(d for d in range(3) if d != a)
            frac = fg.mean(axis=other)  # foreground fraction of each slice along axis a
            items.extend(("nifti", str(p), a, int(s)) for s in np.flatnonzero(frac >= min_fg))
    return items


def list_nifti_files(config) -> list[Path]:
    files = [Path(f) for f in data_option(config, "nifti_files")]
    root = data_option(config, "root")
    if root:
        r = Path(root)
        if not r.exists():
            raise DatasetError(f"data folder {r} does not exist (config.data.root)")
        files += [r] if r.is_file() else sorted(p for p in r.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    if not files:
        raise DatasetError("no NIfTI files: set config.data.nifti_files or config.data.root")
    for f in files:
        if not f.is_file():
            raise DatasetError(f"NIfTI file {f} does not exist")
    return files


def split_items(items: list[tuple], eval_every: int) -> tuple[list[tuple], list[tuple]]:
    """Every ``eval_every``-th item (0, k, 2k, ...) is held out; the rest is for training."""
    if eval_every <= 0:
        return items, []
    return ([it for i, it in enumerate(items) if i % eval_every != 0],
            [it for i, it in enumerate(items) if i % eval_every == 0])
