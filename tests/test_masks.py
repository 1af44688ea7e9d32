"""Sampling masks: seed-0 golden masks, sampled fractions, shapes, and RNG hygiene."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import utils

TYPES_1D = ["gaussian1d", "uniform1d"]
TYPES_2D = ["gaussian2d", "uniformrandom2d"]


@pytest.fixture(scope="module")
def golden(reference):
    return reference("dc_golden.pt")


def _parse(key: str):
    type_, fix, acc = key.split("_")
    return type_, fix == "fixTrue", int(acc[len("acc"):])


def test_seed0_masks_equal_golden(golden):
    masks = golden["get_mask_seed0"]
    assert len(masks) == 16
    for key, expected in masks.items():
        type_, fix, acc = _parse(key)
        mask = utils.get_mask(torch.zeros(2, 1, 320, 320), 320, 2, type=type_, acc_factor=acc,
                              center_fraction=0.08, fix=fix, seed=0)
        assert mask.shape == expected.shape and mask.dtype == torch.float32, key
        assert torch.equal(mask.to(torch.uint8), expected), key
        assert mask.mean().item() == pytest.approx(golden["get_mask_sampled_fraction"][key], abs=1e-7), key


@pytest.mark.parametrize("type_", TYPES_1D + TYPES_2D)
def test_global_rng_untouched(type_):
    np_state = np.random.get_state()
    torch_state = torch.get_rng_state()
    utils.get_mask(torch.zeros(2, 1, 32, 32), 32, 2, type=type_, acc_factor=4, center_fraction=0.08, seed=5)
    utils.get_mask(torch.zeros(2, 1, 32, 32), 32, 2, type=type_, acc_factor=4, center_fraction=0.08)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)


@pytest.mark.parametrize("type_", TYPES_1D + TYPES_2D)
def test_seeded_masks_reproducible_and_seed_none_random(type_):
    img = torch.zeros(2, 1, 64, 64)
    a = utils.get_mask(img, 64, 2, type=type_, acc_factor=4, center_fraction=0.08, seed=11)
    b = utils.get_mask(img, 64, 2, type=type_, acc_factor=4, center_fraction=0.08, seed=11)
    c = utils.get_mask(img, 64, 2, type=type_, acc_factor=4, center_fraction=0.08, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = utils.get_mask(img, 64, 2, type=type_, acc_factor=4, center_fraction=0.08)
    e = utils.get_mask(img, 64, 2, type=type_, acc_factor=4, center_fraction=0.08)
    assert not torch.equal(d, e)  # fresh OS entropy each call


@pytest.mark.parametrize("type_", TYPES_1D + TYPES_2D)
def test_mask_shape_dtype_and_batch_structure(type_):
    img = torch.zeros(3, 4, 48, 48, dtype=torch.complex64)
    mask = utils.get_mask(img, 48, 3, type=type_, acc_factor=4, center_fraction=0.08, seed=1)
    assert mask.shape == img.shape and mask.dtype == img.dtype
    values = torch.unique(mask.real)
    assert set(values.tolist()) <= {0.0, 1.0}
    # one mask per batch item, shared by all coils
    assert all(torch.equal(mask[:, 0], mask[:, c]) for c in range(4))
    assert not torch.equal(mask[0], mask[1])
    fixed = utils.get_mask(img, 48, 3, type=type_, acc_factor=4, center_fraction=0.08, fix=True, seed=1)
    assert all(torch.equal(fixed[0], fixed[b]) for b in range(3))
    # the fixed mask is the first draw of the unfixed one (same calls, same order)
    assert torch.equal(fixed[0], mask[0])


@pytest.mark.parametrize("type_", TYPES_1D)
def test_1d_masks_are_column_masks_with_centre_block(type_):
    size, cf = 64, 0.125
    mask = utils.get_mask(torch.zeros(1, 1, size, size), size, 1, type=type_, acc_factor=4, center_fraction=cf,
                          seed=3)[0, 0]
    assert torch.equal(mask, mask[:1].expand_as(mask))  # every row identical
    n_center = int(size * cf)
    c_from = size // 2 - n_center // 2
    assert torch.all(mask[:, c_from:c_from + n_center] == 1)


def test_sampled_fraction_near_nominal():
    # the original's masks: ~25.5% sampled for gaussian1d at x4 (320), ~13% for gaussian2d at x4
    img = torch.zeros(4, 1, 320, 320)
    g1 = utils.get_mask(img, 320, 4, type="gaussian1d", acc_factor=4, center_fraction=0.08, seed=7)
    g2 = utils.get_mask(img, 320, 4, type="gaussian2d", acc_factor=4, seed=7)
    assert 0.22 < g1.mean().item() < 0.29
    assert 0.11 < g2.mean().item() < 0.15


def test_unknown_type_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="unknown mask type"):
        utils.get_mask(torch.zeros(1, 1, 32, 32), 32, 1, type="radial", seed=0)
    with pytest.raises(ValueError):
        utils.get_mask(torch.zeros(1, 1, 32, 32), 32, 2, type="gaussian1d", seed=0)  # batch too large
    with pytest.raises(ValueError):
        utils.get_mask(torch.zeros(1, 1, 32, 32), 64, 1, type="gaussian2d", seed=0)  # size mismatch


def test_poisson_mask():
    img = torch.zeros(2, 3, 64, 64)
    np_state = np.random.get_state()
    mask = utils.get_mask(img, 64, 2, type="poisson", acc_factor=4, seed=0)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert mask.shape == img.shape and mask.dtype == img.dtype
    from sigpy.mri import poisson
    expected0 = torch.from_numpy(np.real(poisson((64, 64), accel=4, seed=0))).float()
    expected1 = torch.from_numpy(np.real(poisson((64, 64), accel=4, seed=1))).float()
    assert torch.equal(mask[0, 0], expected0) and torch.equal(mask[1, 2], expected1)
    fixed = utils.get_mask(img, 64, 2, type="poisson", acc_factor=4, fix=True, seed=0)
    assert torch.equal(fixed[1, 1], expected0)
    assert 3.5 < 1 / mask[0, 0].mean().item() < 4.5


# --------------------------------------------------------------------------------------------------
# ESPIRiT calibration width: the square sigpy actually crops
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("acc", [4, 8])
def test_calib_width_square_is_fully_sampled_as_sigpy_crops_it(acc):
    """gaussian1d masks at 192 px: sigpy's calibration crop at the chosen width reads measured k-space only."""
    import sigpy as sp
    for seed in range(150):
        m = utils.get_mask(torch.zeros(1, 1, 192, 192), 192, 1, type="gaussian1d", acc_factor=acc,
                           center_fraction=0.08, seed=seed)[0, 0].numpy()
        w = utils.calib_width(m)
        assert utils.ESPIRIT_MIN_CALIB <= w <= utils.ESPIRIT_MAX_CALIB
        assert sp.resize(m, [w, w]).all(), (seed, w)  # EspiritCalib's own crop (sp.resize) of the mask
        # the largest such width: every wider square sigpy could crop holds an unmeasured sample
        assert not any(sp.resize(m, [v, v]).all() for v in range(w + 1, utils.ESPIRIT_MAX_CALIB + 1)), seed


def test_calib_width_odd_and_rectangular_shapes():
    import sigpy as sp
    mask = np.zeros((3, 57, 71), np.float32)  # [coils, H, W]: odd sizes
    mask[:, :, 28:47] = 1                     # 19 columns around sigpy's centre column 71 // 2 = 35
    w = utils.calib_width(mask)
    assert w == 15  # sigpy's crop [35 - w//2, 35 - w//2 + w) stays inside columns 28..46 up to w = 15
    assert sp.resize(mask[0], [w, w]).all() and not sp.resize(mask[0], [w + 1, w + 1]).all()
    mask[1, :, 28] = 0                        # a column missing in one coil is not fully sampled
    w = utils.calib_width(mask)
    assert w == 13 and sp.resize(mask[1], [w, w]).all()


def test_faithful_poisson_is_the_originals_mask():
    """The original's get_mask calls sigpy's poisson((size, size), accel=acc) with no seed (sigpy's default 0)."""
    from sigpy.mri import poisson
    for size, acc in ((64, 4), (96, 8)):
        original = torch.from_numpy(np.real(poisson((size, size), accel=acc))).float()  # as the original calls it
        img = torch.zeros(3, 2, size, size)
        for seed in (None, 0, 42):
            mask = utils.get_mask(img, size, 3, type="poisson", acc_factor=acc, seed=seed, faithful=True)
            assert all(torch.equal(mask[b, c], original) for b in range(3) for c in range(2)), (size, seed)
        # the default path: batch item i uses seed + i, so only seed 0 reproduces the original (item 0)
        mask = utils.get_mask(img, size, 3, type="poisson", acc_factor=acc, seed=42)
        assert not torch.equal(mask[0, 0], original) and not torch.equal(mask[0, 0], mask[1, 0])
