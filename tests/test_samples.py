"""The shipped samples: layout, shapes, dtypes, ranges, masks, provenance."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO

SAMPLES = REPO / "samples"
# relative path -> (shape, dtype)
LAYOUT = {
    "real/retrospective/001.npy": ((320, 320), np.float32),
    "real/retrospective/002.npy": ((320, 320), np.float32),
    "real/retrospective/003.npy": ((320, 320), np.float32),
    "real/prospective/001.npy": ((320, 320), np.float32),
    "real/prospective/001_mask.npy": ((320, 320), np.float32),
    "real/prospective/002.npy": ((320, 320), np.complex64),
    "real/prospective/002_mask.npy": ((320, 320), np.float32),
    "single-coil/001.npy": ((320, 320), np.complex64),
    "multi-coil/001.npy": ((8, 192, 192), np.complex64),
}


def load(rel: str) -> np.ndarray:
    """One sample, loaded without pickle."""
    return np.load(SAMPLES / rel, allow_pickle=False)


def test_layout_shapes_dtypes_and_size():
    files = sorted(str(p.relative_to(SAMPLES)) for p in SAMPLES.rglob("*.npy"))
    assert files == sorted(LAYOUT)
    for rel, (shape, dtype) in LAYOUT.items():
        a = load(rel)
        assert a.shape == shape and a.dtype == dtype, rel
        assert np.isfinite(a).all(), rel
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 10 * 2 ** 20


@pytest.mark.parametrize("rel", [r for r in LAYOUT if "retrospective" in r])
def test_retrospective_are_distinct_magnitudes_in_unit_range(rel):
    x = load(rel)
    assert x.min() >= 0 and x.max() == pytest.approx(1.0)
    assert 0.1 < (x > 0.05).mean() < 0.95  # an object on a background, not noise or a blank frame
    others = [load(r) for r in LAYOUT if "retrospective" in r and r != rel]
    assert all(np.corrcoef(x.ravel(), o.ravel())[0, 1] < 0.9 for o in others)


def test_single_and_multi_coil_are_complex_with_smooth_phase():
    x = load("single-coil/001.npy")
    assert np.abs(x).max() == pytest.approx(1.0, abs=1e-6)
    coils = load("multi-coil/001.npy")
    for img in (x, *coils):
        support = np.abs(img) > 0.2 * np.abs(img).max()
        assert np.abs(img.imag[support]).mean() > 0.05 * np.abs(img[support]).mean()  # genuinely complex
        # smooth phase: neighbouring pixels inside the object differ by a small angle
        dphi = np.angle(img[:, 1:] * np.conj(img[:, :-1]))[support[:, 1:] & support[:, :-1]]
        assert np.median(np.abs(dphi)) < 0.1
    rss = np.sqrt(np.sum(np.abs(coils) ** 2, axis=0))
    assert rss.max() == pytest.approx(1.0, rel=1e-3)  # maps normalised to RSS 1: the RSS is the magnitude
    assert np.abs(coils).max(axis=(1, 2)).std() > 0  # coils differ


@pytest.mark.parametrize("name", ["001", "002"])
def test_prospective_masks_and_measured_kspace(name):
    import utils

    mask = load(f"real/prospective/{name}_mask.npy")
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert (mask == mask[:1]).all()  # gaussian1d: whole columns
    assert 0.2 < mask.mean() < 0.3  # ~x4
    expected = utils.get_mask(torch.zeros(1, 1, 320, 320), 320, 1, type="gaussian1d", acc_factor=4,
                              center_fraction=0.08, seed=int(name))[0, 0].numpy()
    np.testing.assert_array_equal(mask, expected)
    x = torch.from_numpy(load(f"real/prospective/{name}.npy").astype(np.complex64))
    k = utils.fft2(x)
    m = torch.from_numpy(mask)
    if name == "001":  # a real aliased image (the original's format): its real part also fills the
        m = torch.clamp(m + torch.from_numpy(np.roll(mask[:, ::-1], 1, axis=1).copy()), max=1)  # mirror columns
    # an aliased image carries no k-space outside the (mirrored) mask ...
    assert (k.abs() * (1 - m)).max() < 1e-3 * k.abs().max()
    if name == "002":  # ... and the complex one's re-measured k-space is exact
        np.testing.assert_allclose(utils.ifft2(k * m).numpy(), x.numpy(), atol=1e-5)


def test_notice_lists_every_file_with_its_sha256():
    text = (SAMPLES / "NOTICE.md").read_text()
    listed = dict((p, h) for h, p in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, flags=re.M))
    assert set(listed) == set(LAYOUT)
    for rel, digest in listed.items():
        assert hashlib.sha256((SAMPLES / rel).read_bytes()).hexdigest() == digest, rel
    for word in ("nilearn", "dipy", "pydicom-data", "Licence", "Colin27"):
        assert word in text


def test_no_sample_is_a_copy_of_evaluation_only_data(shared):
    data = shared / "data"
    if not data.is_dir():
        pytest.skip(f"{data} not present")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    forbidden = {digest(p) for p in data.rglob("*") if p.is_file() and p.suffix != ".md"}
    for p in SAMPLES.rglob("*.npy"):
        assert digest(p) not in forbidden, p
    # nor the same pixels re-saved: compare arrays with the original repository's samples
    for q in (data / "score-MRI" / "samples").rglob("*.npy"):
        ref = np.abs(np.load(q)).astype(np.float32)
        for p in SAMPLES.rglob("*.npy"):
            a = np.abs(np.load(p)).astype(np.float32)
            assert a.shape != ref.shape or not np.allclose(a, ref, atol=1e-3), (p, q)
