"""Slice datasets: fastMRI .h5, .npy/.png folders, NIfTI volumes; normalisation, augmentation, splits, resume."""
from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pytest
import torch

from score_mri.training import datasets

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def config(**data) -> ml_collections.ConfigDict:
    """Minimal config with the fields datasets.py reads."""
    base = {"dataset": "npy_folder", "root": "", "image_size": 16, "rot_deg": 0.0}
    return ml_collections.ConfigDict({"seed": 3, "training": {"batch_size": 4}, "data": {**base, **data}})


def check_batch(x: torch.Tensor, batch: int, size: int = 16) -> None:
    assert x.shape == (batch, 1, size, size) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def blob(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    return (np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.1 * h * w)) * 50 + 7
            + rng.uniform(0, 1, (h, w))).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Folders of .npy / .png
# ----------------------------------------------------------------------------------------------

def test_npy_png_folder_recursive(tmp_path):
    from PIL import Image
    (tmp_path / "a" / "b").mkdir(parents=True)
    np.save(tmp_path / "a" / "s0.npy", blob(20, 24))
    np.save(tmp_path / "a" / "b" / "vol.npy", np.stack([blob(16, 16, i) for i in range(3)]))  # 3 slices
    np.save(tmp_path / "c.npy", (blob(18, 18) * np.exp(1j)).astype(np.complex64))  # complex -> magnitude
    Image.fromarray(blob(12, 12).astype(np.uint8)).save(tmp_path / "a" / "p.png")
    Image.fromarray(np.stack([blob(20, 20).astype(np.uint8)] * 3, -1)).save(tmp_path / "rgb.png")
    (tmp_path / "notes.txt").write_text("ignored")
    train, held = datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=0))
    assert len(train) == 7 and len(held) == 0
    for i in range(len(train)):
        x = train.read(i)
        assert x.min() == 0 and x.max() == pytest.approx(1)  # per-slice min/max normalisation
    it, _ = datasets.get_dataset(config(root=str(tmp_path), eval_every=0), rank=0, world_size=1)
    for _ in range(3):
        check_batch(next(it), 4)


def test_normalize_slice_is_min_max():
    x = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(datasets.normalize_slice(x), (x - 2) / 8)
    assert not datasets.normalize_slice(np.full((3, 3), 5.0)).any()


def test_crop_pad_and_eval_centre(tmp_path):
    np.save(tmp_path / "small.npy", np.ones((10, 12), np.float32) + np.eye(10, 12, dtype=np.float32))
    train, _ = datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=0))
    x = train.get(0)  # no generator: centre pad
    assert x.shape == (16, 16)
    assert not x[:3].any() and not x[-3:].any() and not x[:, :2].any() and not x[:, -2:].any()
    np.testing.assert_array_equal(x[3:13, 2:14], train.read(0))
    big = np.arange(30 * 30, dtype=np.float32).reshape(30, 30)
    np.save(tmp_path / "small.npy", big)
    y = train.get(0)
    np.testing.assert_allclose(y, datasets.normalize_slice(big)[7:23, 7:23])


# ----------------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------------

def make_nifti(path: Path, shape=(12, 14, 10)) -> np.ndarray:
    nib = pytest.importorskip("nibabel")
    vol = np.zeros(shape, np.float32)
    vol[3:9, 4:11, 2:8] = 100.0  # a block; slices outside it are empty
    vol[5, 6, 4] = 50.0
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return vol


def test_nifti_slices_skip_empty(tmp_path):
    vol = make_nifti(tmp_path / "v.nii.gz")
    c = config(dataset="nifti", nifti_files=[str(tmp_path / "v.nii.gz")], slice_axes=(0, 2), eval_every=0)
    train, _ = datasets.get_slice_datasets(c)
    # axis 0: slices 3..8 hold 7*6/(14*10)=30% foreground; axis 2: slices 2..7 hold 6*7/(12*14)=25%
    assert [(it[2], it[3]) for it in train.items] == [(0, s) for s in range(3, 9)] + [(2, s) for s in range(2, 8)]
    np.testing.assert_allclose(train.read(0), datasets.normalize_slice(vol[3]))
    it = datasets.BatchIterator(train, 5, seed=0)
    check_batch(next(it), 5)
    # a higher foreground threshold drops all slices -> clear error
    with pytest.raises(datasets.DatasetError, match="no slices"):
        datasets.get_slice_datasets(config(dataset="nifti", nifti_files=[str(tmp_path / "v.nii.gz")],
                                           min_foreground=0.9))


def test_nifti_root_folder(tmp_path):
    make_nifti(tmp_path / "a.nii.gz")
    make_nifti(tmp_path / "sub_b.nii", shape=(10, 10, 10))
    (tmp_path / "sub").mkdir()
    make_nifti(tmp_path / "sub" / "c.nii.gz")
    train, held = datasets.get_slice_datasets(config(dataset="nifti", root=str(tmp_path)))
    files = {Path(it[1]).name for it in train.items + held.items}
    assert files == {"a.nii.gz", "sub_b.nii", "c.nii.gz"}


@pytest.mark.skipif(not CH2.exists(), reason="Debian mricron-data (ch2.nii.gz) not installed")
def test_colin27_ch2_template():
    c = config(dataset="nifti", nifti_files=[str(CH2)], image_size=32, resize="fit", rot_deg=10.0,
               scale_range=(0.9, 1.2), gamma_range=(0.7, 1.4))
    train, held = datasets.get_slice_datasets(c)
    assert len(train) > 300 and len(held) == pytest.approx(len(train) / 9, abs=2)
    it = datasets.BatchIterator(train, 6, seed=1)
    x = next(it)
    check_batch(x, 6, 32)
    assert (x.flatten(1) > 0.1).float().mean(1).min() > 0.05  # no empty slices


# ----------------------------------------------------------------------------------------------
# fastMRI .h5
# ----------------------------------------------------------------------------------------------

def ifft2c(k: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)


def make_h5(path: Path, multicoil: bool, with_recon: bool = True) -> np.ndarray:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    shape = (3, 4, 24, 20) if multicoil else (3, 24, 20)
    kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if with_recon:
            recon = np.abs(rng.standard_normal((3, 16, 16))).astype(np.float32) + 1
            f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc", data=recon)
        f.attrs["acquisition"] = "CORPD_FBK"
    return kspace


@pytest.mark.parametrize("multicoil", [False, True])
def test_fastmri_h5_reconstructions(tmp_path, multicoil):
    make_h5(tmp_path / "file1.h5", multicoil)
    train, held = datasets.get_slice_datasets(config(dataset="fastmri_knee", root=str(tmp_path), eval_every=0))
    key = "reconstruction_rss" if multicoil else "reconstruction_esc"
    assert [it[2:4] for it in train.items] == [(key, 0), (key, 1), (key, 2)]
    it, _ = datasets.get_dataset(config(dataset="fastmri_knee", root=str(tmp_path), eval_every=0))
    check_batch(next(it), 4)


def test_fastmri_h5_kspace(tmp_path):
    k = make_h5(tmp_path / "mc.h5", multicoil=True, with_recon=False)
    train, _ = datasets.get_slice_datasets(config(dataset="fastmri_knee", root=str(tmp_path), eval_every=0))
    assert len(train) == 3 and train.items[0][2] == "kspace"
    img = ifft2c(k[1])[:, 4:20, 2:18]  # centre crop 24x20 -> 16x16
    np.testing.assert_allclose(train.read(1), datasets.normalize_slice(np.sqrt((np.abs(img) ** 2).sum(0))),
                               rtol=1e-4, atol=1e-5)
    check_batch(torch.from_numpy(train.get(1))[None, None], 1)
    # real and imaginary parts of each coil image as separate slices, scaled by the peak magnitude
    ri, _ = datasets.get_slice_datasets(config(dataset="fastmri_knee", root=str(tmp_path), eval_every=0,
                                               kspace_part="real_imag"))
    assert len(ri) == 3 * 4 * 2
    coil = ifft2c(k[0])[2, 4:20, 2:18]
    np.testing.assert_allclose(ri.read(2 * 2 + 1), coil.imag / np.abs(coil).max(), rtol=1e-4, atol=1e-5)


def test_original_knee_npy_layout(tmp_path):
    for split, n in (("knee_320_train", 5), ("knee_320_val", 2)):
        d = tmp_path / split / "vol1"
        d.mkdir(parents=True)
        for i in range(n):
            np.save(d / f"{i:03d}.npy", blob(16, 16, i))
    train, held = datasets.get_slice_datasets(config(dataset="fastmri_knee", root=str(tmp_path)))
    assert len(train) == 5 and len(held) == 2
    assert all("knee_320_val" in it[1] for it in held.items)


# ----------------------------------------------------------------------------------------------
# Splits, sharding, augmentation, resumable iteration, random state
# ----------------------------------------------------------------------------------------------

def slice_folder(tmp_path: Path, n: int = 25) -> Path:
    for i in range(n):
        np.save(tmp_path / f"s{i:02d}.npy", blob(20, 20, i))
    return tmp_path


def test_held_out_split_and_shards(tmp_path):
    c = config(root=str(slice_folder(tmp_path)))
    train, held = datasets.get_slice_datasets(c)
    names = lambda ds: [Path(it[1]).name for it in ds.items]  # noqa: E731
    assert names(held) == ["s00.npy", "s10.npy", "s20.npy"]
    assert not set(names(held)) & set(names(train)) and len(train) == 22
    shards = [train.shard(r, 3) for r in range(3)]
    all_items = [it for s in shards for it in s.items]
    assert sorted(all_items) == sorted(train.items) and len(set(all_items)) == len(all_items)
    it0, _ = datasets.get_dataset(c, rank=0, world_size=2)
    it1, _ = datasets.get_dataset(c, rank=1, world_size=2)
    assert not set(it0.dataset.items) & set(it1.dataset.items)
    assert it0.n_total == it1.n_total == 22
    with pytest.raises(datasets.DatasetError, match="none left"):
        np.save(tmp_path / "only.npy", blob(4, 4))
        datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=1))


def test_augmentation_seeded_and_global_rng_untouched(tmp_path):
    c = config(root=str(slice_folder(tmp_path)), rot_deg=15.0, scale_range=(0.8, 1.2), gamma_range=(0.5, 2.0),
               vertical_flip=True)
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    a, _ = datasets.get_dataset(c)
    b, _ = datasets.get_dataset(c)
    xa, xb = [next(a) for _ in range(3)], [next(b) for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(xa, xb))
    for x in xa:
        check_batch(x, 4)
    c.seed = 4
    other, _ = datasets.get_dataset(c)
    assert not torch.equal(next(other), xa[0])
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and torch.equal(torch.get_rng_state(), torch_state)
    # augmentation changes the slice but not its range or size
    ds = a.dataset
    y = ds.get(0, np.random.default_rng(5))
    assert y.shape == (16, 16) and not np.array_equal(y, ds.get(0)) and 0 <= y.min() and y.max() <= 1


def test_iterator_state_resumes_exactly(tmp_path):
    c = config(root=str(slice_folder(tmp_path, 9)), rot_deg=5.0, eval_every=0)
    it, _ = datasets.get_dataset(c)
    for _ in range(4):  # 16 slices drawn from 9: the second epoch is under way
        next(it)
    assert it.epoch == 1
    path = tmp_path / "state.pt"
    torch.save(it.state_dict(), path)
    expected = [next(it) for _ in range(5)]
    fresh, _ = datasets.get_dataset(c)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(next(fresh), e) for e in expected)
    assert fresh.epoch == it.epoch
    # every slice appears once per epoch
    seen = []
    ep = datasets.BatchIterator(fresh.dataset, 1, seed=0, augment=False)
    for _ in range(9):
        next(ep)
        seen.append(int(ep.perm[ep.pos - 1]))
    assert sorted(seen) == list(range(9))


def test_user_errors(tmp_path):
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.get_slice_datasets(config(root=str(tmp_path / "nope")))
    with pytest.raises(datasets.DatasetError, match="no slices"):
        datasets.get_slice_datasets(config(root=str(tmp_path)))
    with pytest.raises(datasets.DatasetError, match="root is empty"):
        datasets.get_slice_datasets(config())
    with pytest.raises(datasets.DatasetError, match="not supported"):
        datasets.get_slice_datasets(config(dataset="LSUN", root=str(tmp_path)))
    with pytest.raises(datasets.DatasetError, match="does not exist"):
        datasets.get_slice_datasets(config(dataset="nifti", nifti_files=[str(tmp_path / "x.nii.gz")]))
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(datasets.DatasetError, match="cannot read"):
        datasets.get_slice_datasets(config(dataset="nifti", nifti_files=[str(tmp_path / "bad.nii.gz")]))


# ----------------------------------------------------------------------------------------------
# Per-slice normalisation (data.normalize) and non-finite data
# ----------------------------------------------------------------------------------------------

def _knee_layout(root: Path, n: int = 4, size: int = 16) -> list[np.ndarray]:
    """The original's layout <root>/knee_320_train/<volume>/<slice>.npy with asymmetric [0.1, 0.7] slices."""
    d = root / "knee_320_train" / "vol1"
    d.mkdir(parents=True)
    slices = []
    for i in range(n):
        x = (0.1 + 0.6 * np.random.default_rng(i).uniform(0, 1, (size, size))).astype(np.float32)
        x[:, : size // 4] = 0.1  # a left band: any left-right flip moves it
        np.save(d / f"{i:03d}.npy", x)
        slices.append(x)
    return slices


def test_knee_config_serves_slices_as_stored(tmp_path):
    """The knee config reads slices as the original's loader does: no min/max, no flip (augmentation off)."""
    from configs.ve import fastmri_knee_320_ncsnpp_continuous as knee
    slices = _knee_layout(tmp_path)
    c = knee.get_config()
    c.data.root, c.data.image_size, c.data.eval_every = str(tmp_path), 16, 0
    assert (c.data.normalize, c.data.random_flip) == ("none", False)
    train, _ = datasets.get_slice_datasets(c)
    by_name = {Path(it[1]).name: k for k, it in enumerate(train.items)}
    rng = np.random.default_rng(0)
    for i, x in enumerate(slices):
        k = by_name[f"{i:03d}.npy"]
        np.testing.assert_array_equal(train.read(k), x)
        for _ in range(8):  # every augmented draw is the stored slice
            np.testing.assert_array_equal(train.get(k, rng), x)
    batch = next(datasets.get_dataset(c)[0])
    assert 0.099 < batch.min() and batch.max() < 0.701  # not stretched to [0, 1]
    # min/max normalisation and flips are one option away
    c.data.normalize, c.data.random_flip = "minmax", True
    train, _ = datasets.get_slice_datasets(c)
    y = train.read(0)
    assert y.min() == 0 and y.max() == 1
    flipped = [not np.array_equal(train.get(0, np.random.default_rng(s)), y) for s in range(16)]
    assert any(flipped) and not all(flipped)


def test_embedded_config_keeps_minmax_and_flips():
    from configs.ve import colin27_ncsnpp_small as colin
    c = colin.get_config()
    assert (c.data.normalize, c.data.random_flip, c.data.vertical_flip) == ("minmax", True, False)


@pytest.mark.parametrize("normalize", ["minmax", "none"])
def test_non_finite_slice_names_file_and_slice(tmp_path, normalize):
    vol = np.stack([blob(16, 16, i) for i in range(4)])
    vol[2, 5, 7] = np.nan
    np.save(tmp_path / "vol.npy", vol)
    flat = blob(16, 16, 9)
    flat[0, 0] = np.inf
    np.save(tmp_path / "inf.npy", flat)
    train, _ = datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=0, normalize=normalize))
    good = [k for k, it in enumerate(train.items) if it[1].endswith("vol.npy") and it[2] != 2]
    assert len(good) == 3 and all(np.isfinite(train.read(k)).all() for k in good)
    bad_nan = next(k for k, it in enumerate(train.items) if it[1].endswith("vol.npy") and it[2] == 2)
    with pytest.raises(datasets.DatasetError, match=r"vol\.npy, slice 2 contains NaN or Inf"):
        train.read(bad_nan)
    bad_inf = next(k for k, it in enumerate(train.items) if it[1].endswith("inf.npy"))
    with pytest.raises(datasets.DatasetError, match=r"inf\.npy contains NaN or Inf"):
        train.get(bad_inf, np.random.default_rng(0))
    with pytest.raises(datasets.DatasetError, match="contains NaN or Inf"):  # through the training stream
        it = datasets.BatchIterator(train, 5, seed=0)
        next(it)


def test_normalize_option_checked_and_stored_units_warned(tmp_path):
    from PIL import Image
    np.save(tmp_path / "a.npy", blob(16, 16))
    with pytest.raises(datasets.DatasetError, match="normalize must be one of"):
        datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=0, normalize="zscore"))
    Image.fromarray((blob(16, 16) * 4).astype(np.uint8)).save(tmp_path / "b.png")
    with pytest.warns(UserWarning, match="stored units"):
        train, _ = datasets.get_slice_datasets(config(root=str(tmp_path), eval_every=0, normalize="none"))
    png = next(k for k, it in enumerate(train.items) if it[0] == "png")
    assert train.read(png).max() > 1  # 0-255 as stored
