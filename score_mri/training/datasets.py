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
``foreground_level``, ``volume_cache``. Readers, defaults and slice listing live in ``slice_sources.py``.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from score_mri.training.slice_sources import (DATA_DEFAULTS, NORMALIZE_MODES, DatasetError, describe,  # noqa: F401 (re-exported)
                           folder_items, h5_items, load_nifti, list_nifti_files, nifti_items, normalizer,
                           read_h5_slice, read_npy_slice, read_png_slice, split_items, volume_loader, data_option, normalize_slice)

class SliceDataset:
    """A list of 2-D slices with per-slice normalisation and the augmentation of ``config.data``."""

    def __init__(self, items: Sequence[tuple], config, train: bool):
        self.items = list(items)
        self.train = train
        self.image_size = int(config.data.image_size)
        self.opt = {k: data_option(config, k) for k in DATA_DEFAULTS}
        self._norm = normalizer(self.opt["normalize"])
        self._load_volume = volume_loader(int(self.opt["volume_cache"]))

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
            x = read_h5_slice(path, key, s, coil, part, self.image_size, self._norm)
        elif kind == "npy":
            x = read_npy_slice(path, idx[0], self._norm)
        elif kind == "png":
            x = read_png_slice(path, self._norm)
        elif kind == "nifti":
            axis, s = idx
            index = (slice(None),) * axis + (s,)  # a view (np.take would copy the whole volume)
            x = self._norm(self._load_volume(path)[index])
        else:
            raise ValueError(f"unknown item kind {kind!r}")
        if not np.isfinite(x).all():  # min/max turns an Inf into NaN: one check covers both modes
            raise DatasetError(f"{describe(self.items[i])} contains NaN or Inf values")
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
            if rng.random() < opt["remap_prob"]:
                x = _remap_intensity(x, rng)
            if opt["elastic_alpha"] > 0 and rng.random() < opt["elastic_prob"]:
                x = _elastic(x, rng, float(opt["elastic_alpha"]), float(opt["elastic_sigma"]))
            if opt["random_flip"] and rng.random() < 0.5:
                x = x[:, ::-1]
            if opt["vertical_flip"] and rng.random() < 0.5:
                x = x[::-1, :]
        x = _crop_or_pad(x, self.image_size, rng if (rng is not None and opt["random_crop"]) else None)
        if rng is not None and opt["noise_max"] > 0 and rng.random() < opt["noise_prob"]:
            x = _rician(x, rng, rng.uniform(0.0, float(opt["noise_max"])))
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


def _remap_intensity(x: np.ndarray, rng: np.random.Generator, knots: int = 5) -> np.ndarray:
    """A random monotone piecewise-linear intensity curve on [0, peak] (changes the tissue contrast)."""
    peak = float(np.abs(x).max())
    if peak <= 0:
        return x
    steps = rng.dirichlet(np.full(knots, 2.0))  # increments of the curve: monotone, ends at 1
    ys = np.concatenate([[0.0], np.cumsum(steps)])
    xs = np.linspace(0.0, 1.0, knots + 1)
    return (np.interp(np.clip(x / peak, 0.0, 1.0), xs, ys) * peak).astype(np.float32)


def _elastic(x: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Warp by a smooth random displacement field (peak about ``alpha`` pixels, smoothness ``sigma``)."""
    from scipy import ndimage
    fields = []
    for _ in range(2):
        d = ndimage.gaussian_filter(rng.standard_normal(x.shape), sigma, mode="reflect")
        fields.append(d * (alpha / max(float(np.abs(d).max()), 1e-12)))
    grid = np.meshgrid(np.arange(x.shape[0]), np.arange(x.shape[1]), indexing="ij")
    coords = [g + f for g, f in zip(grid, fields)]
    return ndimage.map_coordinates(x, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def _rician(x: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """Magnitude of the image plus white complex Gaussian noise (k-space noise seen in a magnitude image)."""
    n = rng.standard_normal((2,) + x.shape) * std
    return np.sqrt((x + n[0]) ** 2 + n[1] ** 2).astype(np.float32)


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

def get_slice_datasets(config) -> tuple[SliceDataset, SliceDataset]:
    """Build the (train, held-out) slice datasets named by ``config.data.dataset``."""
    kind = data_option(config, "dataset")
    eval_every = int(data_option(config, "eval_every"))
    root = data_option(config, "root")
    train_items = eval_items = None
    if kind == "nifti":
        items = nifti_items(list_nifti_files(config), config)
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
            items = h5_items(h5_files, config)
        elif kind == "fastmri_knee" and (r / "knee_320_train").is_dir():
            # the original layout: <root>/knee_320_train/*/*.npy (and knee_320_val when present)
            items = folder_items(r / "knee_320_train")
            if (r / "knee_320_val").is_dir():
                train_items, eval_items = items, folder_items(r / "knee_320_val")
        else:
            items = folder_items(r)
    else:
        raise DatasetError(f"config.data.dataset={kind!r} is not supported (fastmri_knee, npy_folder, nifti)")
    if not items:
        raise DatasetError(f"no slices found in {where} (dataset {kind!r})")
    if train_items is None:
        train_items, eval_items = split_items(items, eval_every)
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
