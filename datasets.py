"""2-D slice datasets for training the score prior: fastMRI .h5, folders of .npy/.png slices, NIfTI volumes.

Each slice is served as stored (``data.normalize='none'``: the original's knee loader, which reads the
prepared [0, 1] ``.npy`` slices unchanged; the knee config's default) or normalised to [0, 1] by its own
min/max (``'minmax'``, as the original's ``normalize_np``; the default elsewhere), optionally augmented (gamma, rotation/scale, flips, random crop/pad to ``config.data.image_size``) with draws from
a per-dataset ``np.random.Generator`` (seeded from ``config.seed + rank``; global random state is never
touched), and served as float32 batches ``[B, 1, H, W]``. A held-out split (every ``eval_every``-th
slice) is kept apart for evaluation.

Config fields read (``config.data``; defaults in ``DATA_DEFAULTS`` apply when a field is absent):
``dataset`` ('fastmri_knee' | 'npy_folder' | 'nifti'), ``root``, ``nifti_files``, ``slice_axes``,
``image_size``, ``h5_key``, ``kspace_part``, ``normalize``, ``resize``, ``random_flip``, ``vertical_flip``,
``random_crop``, ``rot_deg``, ``scale_range``, ``gamma_range``, ``eval_every``, ``min_foreground``,
``foreground_level``, ``volume_cache``.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from fastmri_utils import center_crop
from io_utils import ifft2c_np

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


def _normalizer(mode: str):
    """The per-slice normalisation of ``data.normalize``."""
    if mode == "minmax":
        return normalize_slice
    if mode == "none":
        return _as_stored
    raise DatasetError(f"config.data.normalize must be one of {', '.join(NORMALIZE_MODES)}, got {mode!r}")


def _describe(item: tuple) -> str:
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


def _read_h5(path: str, key: str, s: int, coil: int, part: str, image_size: int, norm) -> np.ndarray:
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


def _read_npy(path: str, s: int, norm) -> np.ndarray:
    x = np.load(path, mmap_mode="r")
    x = x[s] if s >= 0 else x
    return norm(np.abs(x) if np.iscomplexobj(x) else x)


def _read_png(path: str, norm) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        if im.mode not in ("L", "I", "I;16", "F"):
            im = im.convert("L")
        return norm(np.asarray(im, dtype=np.float32))


@functools.lru_cache(maxsize=None)
def _volume_cache(maxsize: int):
    """One LRU cache of loaded NIfTI volumes per cache size."""

    @functools.lru_cache(maxsize=maxsize)
    def load(path: str) -> np.ndarray:
        return _load_nifti(path)

    return load


def _load_nifti(path: str) -> np.ndarray:
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


class SliceDataset:
    """A list of 2-D slices with per-slice normalisation and the augmentation of ``config.data``."""

    def __init__(self, items: Sequence[tuple], config, train: bool):
        self.items = list(items)
        self.train = train
        self.image_size = int(config.data.image_size)
        self.opt = {k: data_option(config, k) for k in DATA_DEFAULTS}
        self._norm = _normalizer(self.opt["normalize"])
        self._load_volume = _volume_cache(int(self.opt["volume_cache"]))

    def __len__(self) -> int:
        return len(self.items)

    def shard(self, rank: int, world_size: int) -> "SliceDataset":
        """This rank's share of the slices (every world_size-th, starting at rank)."""
        out = SliceDataset.__new__(SliceDataset)
        out.__dict__.update(self.__dict__)
        out.items = self.items[rank::world_size]
        return out

    def read(self, i: int) -> np.ndarray:
        """Slice ``i`` as stored or normalised (``data.normalize``), before augmentation; NaN/Inf raise."""
        kind, path, *idx = self.items[i]
        if kind == "h5":
            key, s, coil, part = idx
            x = _read_h5(path, key, s, coil, part, self.image_size, self._norm)
        elif kind == "npy":
            x = _read_npy(path, idx[0], self._norm)
        elif kind == "png":
            x = _read_png(path, self._norm)
        elif kind == "nifti":
            axis, s = idx
            index = (slice(None),) * axis + (s,)  # a view (np.take would copy the whole volume)
            x = self._norm(self._load_volume(path)[index])
        else:
            raise ValueError(f"unknown item kind {kind!r}")
        if not np.isfinite(x).all():  # min/max turns an Inf into NaN: one check covers both modes
            raise DatasetError(f"{_describe(self.items[i])} contains NaN or Inf values")
        return x

    def get(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Slice ``i`` as a float32 [image_size, image_size] array; augmented when ``rng`` is given."""
        x = self.read(i)  # [H, W]
        x = self._resize(x)
        opt = self.opt
        if rng is not None:
            g_lo, g_hi = opt["gamma_range"]
            if (g_lo, g_hi) != (1.0, 1.0):
                gamma = math.exp(rng.uniform(math.log(g_lo), math.log(g_hi)))
                x = np.sign(x) * np.abs(x) ** gamma
            s_lo, s_hi = opt["scale_range"]
            if opt["rot_deg"] > 0 or (s_lo, s_hi) != (1.0, 1.0):
                angle = rng.uniform(-opt["rot_deg"], opt["rot_deg"])
                scale = rng.uniform(s_lo, s_hi)
                x = _rotate_scale(x, angle, scale)
            if opt["random_flip"] and rng.random() < 0.5:
                x = x[:, ::-1]
            if opt["vertical_flip"] and rng.random() < 0.5:
                x = x[::-1, :]
        x = _crop_or_pad(x, self.image_size, rng if (rng is not None and opt["random_crop"]) else None)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _resize(self, x: np.ndarray) -> np.ndarray:
        mode = self.opt["resize"]
        if mode == "none":
            return x
        H, W = x.shape
        ref = max(H, W) if mode == "fit" else min(H, W)
        if mode not in ("fit", "cover"):
            raise DatasetError(f"config.data.resize must be 'none', 'fit' or 'cover', got {mode!r}")
        if ref == self.image_size:
            return x
        f = self.image_size / ref
        size = (max(1, round(H * f)), max(1, round(W * f)))
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None]
        t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=f < 1)
        return t[0, 0].numpy()

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """One deterministic pass (no augmentation, centre crop): [B, 1, H, W] float32 batches."""
        for start in range(0, len(self), batch_size):
            imgs = [self.get(i) for i in range(start, min(start + batch_size, len(self)))]
            yield torch.from_numpy(np.stack(imgs))[:, None]


def _rotate_scale(x: np.ndarray, angle_deg: float, scale: float) -> np.ndarray:
    """Rotate by ``angle_deg`` and zoom by ``scale`` about the slice centre (bilinear, zero fill)."""
    from scipy import ndimage
    a = math.radians(angle_deg)
    # output -> input coordinates: inverse rotation and inverse zoom
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) / scale
    c = (np.array(x.shape) - 1) / 2.0
    return ndimage.affine_transform(x, m, offset=c - m @ c, order=1, mode="constant", cval=0.0)


def _crop_or_pad(x: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Crop (random position when ``rng`` is given, else centre) or zero-pad each dim to ``size``."""
    out = np.zeros((size, size), dtype=np.float32)
    src, dst = [], []
    for n in x.shape:
        if n >= size:  # crop
            o = int(rng.integers(0, n - size + 1)) if rng is not None else (n - size) // 2
            src.append(slice(o, o + size))
            dst.append(slice(0, size))
        else:  # pad
            o = int(rng.integers(0, size - n + 1)) if rng is not None else (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(o, o + n))
    out[tuple(dst)] = x[tuple(src)]
    return out


# ----------------------------------------------------------------------------------------------
# Index building
# ----------------------------------------------------------------------------------------------

def _h5_items(files: Sequence[Path], config) -> list[tuple]:
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


def _folder_items(root: Path) -> list[tuple]:
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


def _nifti_items(files: Sequence[Path], config) -> list[tuple]:
    axes = tuple(int(a) for a in data_option(config, "slice_axes"))
    if not axes or any(a not in (0, 1, 2) for a in axes):
        raise DatasetError(f"config.data.slice_axes must be a non-empty subset of (0, 1, 2), got {axes}")
    min_fg, level = float(data_option(config, "min_foreground")), float(data_option(config, "foreground_level"))
    items = []
    for p in files:
        vol = _load_nifti(str(p))
        thr = level * float(vol.max())
        fg = vol > thr
        for a in axes:
            other = tuple(d for d in range(3) if d != a)
            frac = fg.mean(axis=other)  # foreground fraction of each slice along axis a
            items.extend(("nifti", str(p), a, int(s)) for s in np.flatnonzero(frac >= min_fg))
    return items


def _nifti_files(config) -> list[Path]:
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


def _split(items: list[tuple], eval_every: int) -> tuple[list[tuple], list[tuple]]:
    """Every ``eval_every``-th item (0, k, 2k, ...) is held out; the rest is for training."""
    if eval_every <= 0:
        return items, []
    return ([it for i, it in enumerate(items) if i % eval_every != 0],
            [it for i, it in enumerate(items) if i % eval_every == 0])


def get_slice_datasets(config) -> tuple[SliceDataset, SliceDataset]:
    """Build the (train, held-out) slice datasets named by ``config.data.dataset``."""
    kind = data_option(config, "dataset")
    eval_every = int(data_option(config, "eval_every"))
    root = data_option(config, "root")
    train_items = eval_items = None
    if kind == "nifti":
        items = _nifti_items(_nifti_files(config), config)
        where = "the NIfTI volumes"
    elif kind in ("fastmri_knee", "npy_folder"):
        if not root:
            raise DatasetError("config.data.root is empty: point it at the data folder")
        r = Path(root)
        if not r.is_dir():
            raise DatasetError(f"data folder {r} does not exist (config.data.root)")
        where = str(r)
        h5_files = sorted(r.rglob("*.h5")) if kind == "fastmri_knee" else []
        if h5_files:
            items = _h5_items(h5_files, config)
        elif kind == "fastmri_knee" and (r / "knee_320_train").is_dir():
            # the original layout: <root>/knee_320_train/*/*.npy (and knee_320_val when present)
            items = _folder_items(r / "knee_320_train")
            if (r / "knee_320_val").is_dir():
                train_items, eval_items = items, _folder_items(r / "knee_320_val")
        else:
            items = _folder_items(r)
    else:
        raise DatasetError(f"config.data.dataset={kind!r} is not supported (fastmri_knee, npy_folder, nifti)")
    if not items:
        raise DatasetError(f"no slices found in {where} (dataset {kind!r})")
    if train_items is None:
        train_items, eval_items = _split(items, eval_every)
    stored_units = sorted({it[0] for it in items if it[0] in ("h5", "png")})
    if data_option(config, "normalize") == "none" and stored_units:
        warnings.warn(f"config.data.normalize='none' serves the {'/'.join(stored_units)} slices of {where} in "
                      "their stored units (e.g. fastMRI reconstructions ~1e-4, PNG 0-255); "
                      "--config.data.normalize=minmax scales each slice to [0, 1]", stacklevel=2)
    if not train_items:
        raise DatasetError(f"only {len(items)} slice(s) in {where}: none left for training after the held-out split")
    return SliceDataset(train_items, config, train=True), SliceDataset(eval_items, config, train=False)


# ----------------------------------------------------------------------------------------------
# Resumable infinite batch iterator
# ----------------------------------------------------------------------------------------------

class BatchIterator:
    """Infinite shuffled stream of augmented [B, 1, H, W] float32 batches with a resumable state."""

    def __init__(self, dataset: SliceDataset, batch_size: int, seed: int, shuffle: bool = True,
                 augment: bool = True):
        if len(dataset) == 0:
            raise DatasetError("this process's data shard is empty (more processes than training slices?)")
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.shuffle, self.augment = shuffle, augment
        self.rng = np.random.default_rng(seed)
        self.epoch, self.pos, self.perm = 0, 0, None
        self.n_total = len(dataset)

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> torch.Tensor:
        imgs = []
        while len(imgs) < self.batch_size:
            if self.perm is None or self.pos >= len(self.perm):
                if self.perm is not None:
                    self.epoch += 1
                n = len(self.dataset)
                self.perm = self.rng.permutation(n) if self.shuffle else np.arange(n)
                self.pos = 0
            i = int(self.perm[self.pos])
            self.pos += 1
            imgs.append(self.dataset.get(i, self.rng if self.augment else None))
        return torch.from_numpy(np.stack(imgs))[:, None]  # [B, 1, H, W]

    def state_dict(self) -> dict:
        """Position, epoch, permutation and generator state (plain types: loads with weights_only=True)."""
        return {"epoch": self.epoch, "pos": self.pos, "n": len(self.dataset),
                "perm": None if self.perm is None else torch.from_numpy(np.asarray(self.perm, dtype=np.int64)),
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the stream position; raises ValueError when the dataset size differs."""
        if int(state["n"]) != len(self.dataset):
            raise ValueError(f"data iterator state is for {state['n']} slices, this shard has {len(self.dataset)}")
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.perm = None if state["perm"] is None else state["perm"].numpy().copy()
        self.rng.bit_generator.state = json.loads(state["rng"])


def get_dataset(config, rank: int = 0, world_size: int = 1) -> tuple[BatchIterator, SliceDataset]:
    """Training batch iterator for this rank's shard (seed ``config.seed + rank``) and the held-out dataset."""
    train_ds, eval_ds = get_slice_datasets(config)
    shard = train_ds.shard(rank, world_size)
    it = BatchIterator(shard, config.training.batch_size, seed=int(config.seed) + rank)
    it.n_total = len(train_ds)  # training slices over all ranks
    return it, eval_ds
