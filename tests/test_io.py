"""io_utils: BART .cfl/.hdr round trip and dimension handling, fastMRI .h5 and .npy readers."""
import numpy as np
import pytest

from score_mri.io.readers import UserError, cfl_to_kspace, read_cfl, read_h5, read_npy, write_cfl


def test_cfl_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    a = (rng.randn(3, 5, 1, 2) + 1j * rng.randn(3, 5, 1, 2)).astype(np.complex64)
    write_cfl(tmp_path / "x", a)
    assert (tmp_path / "x.hdr").read_text().splitlines()[:2] == ["# Dimensions", "3 5 1 2"]
    for name in ("x", "x.cfl", "x.hdr"):
        b = read_cfl(tmp_path / name)
        assert b.shape == a.shape and b.dtype == np.complex64
        np.testing.assert_array_equal(a, b)


def test_cfl_is_column_major(tmp_path):
    a = np.arange(6).reshape(2, 3).astype(np.complex64)
    write_cfl(tmp_path / "x", a)
    raw = np.fromfile(tmp_path / "x.cfl", dtype=np.complex64)
    np.testing.assert_array_equal(raw.real, [0, 3, 1, 4, 2, 5])  # first index fastest (Fortran order)


def test_cfl_to_kspace_coils_first():
    rng = np.random.RandomState(1)
    ksp = (rng.randn(1, 6, 4, 3) + 1j * rng.randn(1, 6, 4, 3)).astype(np.complex64)  # BART [x, y, z, coils]
    out = cfl_to_kspace(ksp[..., None, None])            # trailing singleton dims are squeezed
    assert out.shape == (3, 6, 4)
    np.testing.assert_array_equal(out[2], ksp[0, :, :, 2])
    assert cfl_to_kspace(ksp[:, :, :, 0]).shape == (1, 6, 4)  # no coil dim -> one coil
    with pytest.raises(UserError):
        cfl_to_kspace(np.zeros((4, 6, 5, 2), np.complex64))    # three spatial dims
    with pytest.raises(UserError):
        cfl_to_kspace(np.zeros((4, 6, 1, 2, 3), np.complex64))  # a non-coil extra dim (maps)


def test_cfl_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_cfl(tmp_path / "missing.cfl")
    write_cfl(tmp_path / "x", np.zeros((2, 2), np.complex64))
    (tmp_path / "x.hdr").write_text("# Dimensions\n3 3\n")
    with pytest.raises(UserError, match="holds 4 values"):
        read_cfl(tmp_path / "x")
    (tmp_path / "x.hdr").write_text("garbage\n")
    with pytest.raises(UserError, match="Dimensions"):
        read_cfl(tmp_path / "x")


def test_read_h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.RandomState(2)
    ksp = (rng.randn(3, 2, 8, 6) + 1j * rng.randn(3, 2, 8, 6)).astype(np.complex64)
    with h5py.File(tmp_path / "mc.h5", "w") as f:
        f["kspace"] = ksp
    out, mask, s, crop = read_h5(tmp_path / "mc.h5")
    assert s == 1 and mask is None and crop is None and out.shape == (2, 8, 6)
    np.testing.assert_array_equal(out, ksp[1])
    out, _, s, _ = read_h5(tmp_path / "mc.h5", -1)
    assert s == 2
    with h5py.File(tmp_path / "sc.h5", "w") as f:
        f["kspace"] = ksp[:, 0]
        f["mask"] = np.array([0, 1, 1, 0, 1, 0], bool)
    out, mask, s, _ = read_h5(tmp_path / "sc.h5", 0)
    assert out.shape == (1, 8, 6) and mask.shape == (6,)
    with pytest.raises(UserError, match="out of range"):
        read_h5(tmp_path / "sc.h5", 3)
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["image"] = np.zeros((2, 4, 4))
    with pytest.raises(UserError, match="kspace"):
        read_h5(tmp_path / "bad.h5")
    (tmp_path / "noth5.h5").write_text("hello")
    with pytest.raises(UserError, match="cannot read"):
        read_h5(tmp_path / "noth5.h5")


def test_read_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 4), np.float32))
    assert read_npy(tmp_path / "a.npy").shape == (4, 4)
    with pytest.raises(UserError, match="not found"):
        read_npy(tmp_path / "b.npy")
    (tmp_path / "c.npy").write_bytes(b"not an npy file")
    with pytest.raises(UserError, match="cannot read"):
        read_npy(tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.array(["x", "y"]))
    with pytest.raises(UserError, match="numeric"):
        read_npy(tmp_path / "d.npy")


HEADER = (b'<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
          b'<encoding><encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize></encodedSpace>'
          b'<reconSpace><matrixSize><x>320</x><y>300</y><z>1</z></matrixSize></reconSpace></encoding>'
          b'</ismrmrdHeader>')


def test_h5_crop_size(tmp_path):
    """fastMRI's crop: the stored reconstruction's shape, else the header's reconSpace matrix."""
    h5py = pytest.importorskip("h5py")
    ksp = np.ones((1, 8, 6), np.complex64)
    with h5py.File(tmp_path / "hdr.h5", "w") as f:
        f["kspace"] = ksp
        f["ismrmrd_header"] = HEADER
    assert read_h5(tmp_path / "hdr.h5")[3] == (320, 300)
    with h5py.File(tmp_path / "rss.h5", "w") as f:
        f["kspace"] = ksp
        f["ismrmrd_header"] = HEADER
        f["reconstruction_rss"] = np.zeros((1, 4, 2), np.float32)
    assert read_h5(tmp_path / "rss.h5")[3] == (4, 2)


def test_slice_count_reads_each_file_version_once(tmp_path, monkeypatch):
    """A batch run asks for a volume's slice count several times: the header is read once per file version."""
    import os

    import h5py

    from score_mri.io import readers
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = np.zeros((3, 8, 8), np.complex64)
    opened = []
    real_file = h5py.File
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(a[0]) or real_file(*a, **k))
    assert readers.slice_count(path) == 3
    first = len(opened)                                            # the MRD check and the count
    assert first >= 1 and [readers.slice_count(path) for _ in range(2)] == [3, 3] and len(opened) == first
    with real_file(path, "w") as f:                                # a new version of the file: read again
        f["kspace"] = np.zeros((5, 8, 8), np.complex64)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert readers.slice_count(path) == 5 and len(opened) == 2 * first
    with pytest.raises(UserError, match="cannot read"):
        readers.slice_count(tmp_path / "missing.h5")
