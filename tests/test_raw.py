"""Raw scanner data readers: real Siemens twix files from ../shared and synthetic ISMRMRD/MRD files."""
from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ismrmrd = pytest.importorskip("ismrmrd")
pytest.importorskip("twixtools")
import ismrmrd.xsd as xsd  # noqa: E402


def _load_raw():
    """Import ``score_mri.io.raw`` (or load the file by path while the package is being assembled)."""
    try:
        return importlib.import_module("score_mri.io.raw")
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "score_mri" / "io" / "raw.py"
        spec = importlib.util.spec_from_file_location("_score_mri_raw", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


raw = _load_raw()

C, NY, NX_OS, NX = 4, 32, 64, 32
CENTER_COUNTER, FIRST_LINE = 12, 4        # counters 0..27 hold grid lines 4..31 (partial Fourier)


def _cfft(x: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """Centred orthonormal FFT."""
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _cifft(x: np.ndarray, axes=(-2, -1)) -> np.ndarray:
    """Centred orthonormal inverse FFT."""
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _rss(kspace: np.ndarray) -> np.ndarray:
    """Root-sum-of-squares image of [C, ky, kx] k-space."""
    return np.sqrt((np.abs(_cifft(kspace)) ** 2).sum(0))


# ------------------------------------------------------------------------------------------ real twix data

@pytest.fixture(scope="module")
def twix_dir(shared) -> Path:
    """Folder of the twixtools example files in ../shared."""
    d = shared / "data" / "twixtools" / "example_data"
    if not (d / "gre.dat").exists():
        pytest.skip(f"{d / 'gre.dat'} not found")
    return d


@pytest.fixture(scope="module")
def gre(twix_dir):
    """The GRE phantom read with default settings."""
    return raw.read_twix(twix_dir / "gre.dat")


def test_twix_gre_shape_and_metadata(gre, twix_dir):
    assert raw.is_twix(twix_dir / "gre.dat") and not raw.is_mrd(twix_dir / "gre.dat")
    assert gre.kspace.shape == (2, 160, 160) and gre.kspace.dtype == np.complex64
    assert gre.mask.shape == (160,) and gre.mask.all()
    assert gre.num_coils == 2 and gre.header["num_coils"] == 2
    assert gre.header["readout_oversampling"] == 2 and gre.header["oversampling_removed"]
    assert gre.header["fov_mm"][:2] == [200.0, 200.0]
    assert gre.header["noise_scans"] == 0 and not gre.noise_whitened and gre.noise_cov is None
    assert gre.source.endswith("gre.dat")


def test_twix_gre_is_a_plausible_phantom(gre):
    rss = _rss(gre.kspace)
    assert np.isfinite(rss).all() and rss.max() > 0
    n = rss.shape[0]
    yy, xx = np.mgrid[:n, :n] - n / 2
    disc = np.hypot(yy, xx) < 0.5 * n
    energy = rss ** 2
    assert energy[disc].sum() / energy.sum() > 0.9          # the round phantom, not noise or a shifted copy
    corners = energy[:16, :16].mean() + energy[:16, -16:].mean() + energy[-16:, :16].mean() + energy[-16:, -16:].mean()
    assert corners / 4 < 0.05 * energy[disc].mean()
    # k-space energy peaks at the centre (DC line and sample within a few of ny/2, nx/2)
    peak = np.unravel_index(np.argmax((np.abs(gre.kspace) ** 2).sum(0)), gre.kspace.shape[1:])
    assert abs(peak[0] - 80) <= 4 and abs(peak[1] - 80) <= 4


def test_twix_oversampling_removal_halves_readout(gre, twix_dir):
    full = raw.read_twix(twix_dir / "gre.dat", remove_oversampling=False)
    assert full.kspace.shape == (2, 160, 320) and not full.header["oversampling_removed"]
    img_full = _cifft(full.kspace)
    np.testing.assert_allclose(_cifft(gre.kspace), img_full[..., 80:240], rtol=0, atol=1e-5 * np.abs(img_full).max())


def test_twix_epi_and_selection_errors(twix_dir):
    epi = twix_dir / "epi.dat"
    if epi.exists():
        with pytest.raises(raw.RawDataError, match="EPI readouts are not supported"):
            raw.read_twix(epi)
    with pytest.raises(raw.RawDataError, match="slice 3 out of range"):
        raw.read_twix(twix_dir / "gre.dat", slice=3)
    with pytest.raises(raw.RawDataError, match="average 2 out of range"):
        raw.read_twix(twix_dir / "gre.dat", average=2)


@pytest.fixture(scope="module")
def gre_with_noise(twix_dir, tmp_path_factory):
    """gre.dat rewritten with twixtools: 4 correlated noise-adjust scans and a second average of 10 lines."""
    import twixtools

    scan = twixtools.read_twix(str(twix_dir / "gre.dat"), verbose=False)[-1]
    mdbs = [m.convert_to_local() for m in scan["mdb"]]
    image = [m for m in mdbs if m.is_image_scan()]
    rng = np.random.default_rng(0)
    mixing = np.array([[1.0, 0.0], [0.6 + 0.3j, 0.5]])
    noise_scans = []
    for _ in range(4):
        mdb = copy.deepcopy(image[0])
        mdb.clear_all_flags()
        mdb.add_flag("NOISEADJSCAN")
        mdb.data = (mixing @ (rng.standard_normal((2, 256)) + 1j * rng.standard_normal((2, 256))) * 1e-6
                    ).astype(np.complex64)
        noise_scans.append(mdb)
    second = []
    for mdb in image[:10]:
        extra = copy.deepcopy(mdb)
        extra.mdh.Counter.Ave = 1
        extra.data = mdb.data * 3
        second.append(extra)
    scan["mdb"] = noise_scans + mdbs[:-1] + second + mdbs[-1:]
    path = tmp_path_factory.mktemp("twix") / "gre_noise.dat"
    twixtools.write_twix([scan], str(path))
    return path, np.concatenate([m.data for m in noise_scans], axis=1)


def test_twix_noise_prewhitening(gre, gre_with_noise):
    path, noise = gre_with_noise
    assert raw.is_twix(path)
    res = raw.read_twix(path)
    plain = raw.read_twix(path, prewhiten=False)
    assert res.noise_whitened and res.header["noise_scans"] == 4 and not plain.noise_whitened
    w, cov = raw.whitening_matrix(noise)
    np.testing.assert_allclose(res.noise_cov, cov, rtol=1e-5, atol=0)
    white = w @ (noise - noise.mean(1, keepdims=True))
    np.testing.assert_allclose(white @ white.conj().T / (white.shape[1] - 1), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(res.kspace, np.tensordot(w, plain.kspace, axes=(1, 0)), rtol=0,
                               atol=1e-5 * np.abs(res.kspace).max())
    # averages: lines 0..9 hold (1x, 3x) -> mean 2x; average=1 has only those lines
    np.testing.assert_allclose(plain.kspace[:, 10:], gre.kspace[:, 10:], rtol=0, atol=0)
    tol = 1e-5 * np.abs(gre.kspace).max()
    np.testing.assert_allclose(plain.kspace[:, :10], 2 * gre.kspace[:, :10], rtol=0, atol=tol)
    only = raw.read_twix(path, average=1, prewhiten=False)
    assert only.mask[:10].all() and not only.mask[10:].any() and not np.any(only.kspace[:, 10:])
    np.testing.assert_allclose(only.kspace[:, :10], 3 * gre.kspace[:, :10], rtol=0, atol=tol)


# ------------------------------------------------------------------------------------- synthetic MRD data

def _phantom(rng: np.random.Generator) -> np.ndarray:
    """Multi-coil image [C, NY, NX_OS]: an ellipse in the central half of an oversampled readout FOV."""
    yy, xx = np.mgrid[:NY, :NX_OS]
    obj = (((yy - NY / 2) / 11) ** 2 + ((xx - NX_OS / 2) / 12) ** 2 < 1).astype(float)
    obj += 0.5 * (((yy - 13) / 3) ** 2 + ((xx - 30) / 4) ** 2 < 1)
    coils = [np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 400) * np.exp(1j * k) for k, (cy, cx) in
             enumerate([(0, 16), (0, 48), (32, 16), (32, 48)])]
    return (obj * np.array(coils)).astype(np.complex64)


def _header_xml(trajectory: str = "cartesian", z: int = 1) -> str:
    """An ISMRMRD XML header for the synthetic scan (2x readout oversampling, two slices)."""
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=NX_OS, y=NY, z=z),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=400, y=200, z=5)),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=NX, y=NY, z=1),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=200, y=200, z=5)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=NY - FIRST_LINE - 1, center=CENTER_COUNTER),
            slice=xsd.limitType(minimum=0, maximum=1, center=0),
            average=xsd.limitType(minimum=0, maximum=1, center=0)),
        trajectory=xsd.trajectoryType(trajectory))
    head = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=C),
        encoding=[enc])
    return xsd.ToXML(head)


def _write_mrd(path: Path, trajectory: str = "cartesian", noise_dwell: float = 5.0, z: int = 1) -> dict:
    """Write a synthetic MRD file; return the truth (oversampled k-space, mask, noise, mixing)."""
    rng = np.random.default_rng(0)
    kspace_os = _cfft(_phantom(rng)).astype(np.complex64)
    offset = (rng.standard_normal(kspace_os.shape) + 1j * rng.standard_normal(kspace_os.shape)).astype(np.complex64)
    mask = np.zeros(NY, bool)
    mask[FIRST_LINE:] = True
    mask[FIRST_LINE:NY // 2 - 4:2] = False            # skip every other outer line, keep the centre
    mask[NY // 2 + 5::3] = False
    mixing = (rng.standard_normal((C, C)) + 1j * rng.standard_normal((C, C))) / 2 + 2 * np.eye(C)
    white = (rng.standard_normal((C, 512)) + 1j * rng.standard_normal((C, 512))) / np.sqrt(2)
    noise = (mixing @ white).astype(np.complex64)

    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(_header_xml(trajectory, z))
        acq = ismrmrd.Acquisition.from_array(noise[:, :256], sample_time_us=noise_dwell)
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dset.append_acquisition(acq)
        acq = ismrmrd.Acquisition.from_array(noise[:, 256:], sample_time_us=noise_dwell)
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dset.append_acquisition(acq)
        for slc, scale in ((0, 1.0), (1, 2.0)):
            for ave, sign in ((0, 1.0), (1, -1.0)):
                for line in np.flatnonzero(mask)[::-1]:        # any order: counters place the lines
                    data = scale * kspace_os[:, line] + sign * offset[:, line]
                    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data), sample_time_us=5.0,
                                                         center_sample=NX_OS // 2)
                    acq.idx.kspace_encode_step_1 = int(line - FIRST_LINE)
                    acq.idx.slice, acq.idx.average = slc, ave
                    dset.append_acquisition(acq)
    return {"kspace_os": kspace_os, "offset": offset, "mask": mask, "noise": noise}


def _expected(kspace_os: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Truth after removing 2x readout oversampling (central half of the image along x), unsampled lines zero."""
    img = _cifft(kspace_os * mask[:, None], axes=(-1,))
    return _cfft(img[..., NX_OS // 4: NX_OS // 4 + NX], axes=(-1,))


@pytest.fixture()
def mrd_file(tmp_path):
    """A synthetic MRD file and its truth."""
    path = tmp_path / "scan.h5"
    return path, _write_mrd(path)


def test_mrd_roundtrip_exact(mrd_file):
    path, truth = mrd_file
    res = raw.read_mrd(path, prewhiten=False)
    np.testing.assert_array_equal(res.mask, truth["mask"])
    assert res.kspace.shape == (C, NY, NX) and res.kspace.dtype == np.complex64
    expected = _expected(truth["kspace_os"], truth["mask"])
    np.testing.assert_allclose(res.kspace, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert not np.any(res.kspace[:, ~truth["mask"]])
    assert res.header["readout_oversampling"] == 2 and res.header["encoded_matrix"] == [NX_OS, NY, 1]
    assert res.header["noise_scans"] == 2 and res.header["num_slices"] == 2 and not res.noise_whitened
    # no oversampling removal: the oversampled grid itself
    full = raw.read_mrd(path, prewhiten=False, remove_oversampling=False)
    np.testing.assert_allclose(full.kspace, truth["kspace_os"] * truth["mask"][:, None], rtol=0, atol=1e-6)
    # one average, another slice
    first = raw.read_mrd(path, prewhiten=False, remove_oversampling=False, average=0)
    np.testing.assert_allclose(first.kspace, (truth["kspace_os"] + truth["offset"]) * truth["mask"][:, None],
                               rtol=0, atol=1e-6)
    second = raw.read_mrd(path, slice=1, prewhiten=False, remove_oversampling=False)
    np.testing.assert_allclose(second.kspace, 2 * truth["kspace_os"] * truth["mask"][:, None], rtol=0, atol=1e-5)
    assert raw.read_raw(path, prewhiten=False).kspace.shape == (C, NY, NX)


def test_mrd_prewhitening(mrd_file):
    path, truth = mrd_file
    res = raw.read_mrd(path)
    assert res.noise_whitened and res.noise_cov.shape == (C, C)
    w, cov = raw.whitening_matrix(truth["noise"])
    np.testing.assert_allclose(res.noise_cov, cov, rtol=1e-6, atol=1e-6)
    white = w @ (truth["noise"] - truth["noise"].mean(1, keepdims=True))
    np.testing.assert_allclose(white @ white.conj().T / (white.shape[1] - 1), np.eye(C), atol=1e-6)
    plain = raw.read_mrd(path, prewhiten=False)
    np.testing.assert_allclose(res.kspace, np.tensordot(w, plain.kspace, axes=(1, 0)), rtol=0,
                               atol=1e-5 * np.abs(res.kspace).max())


def test_mrd_prewhitening_scales_with_dwell(tmp_path):
    path = tmp_path / "dwell.h5"
    truth = _write_mrd(path, noise_dwell=20.0)      # noise scan 4x narrower bandwidth: image noise variance /4
    res = raw.read_mrd(path)
    assert res.header["noise_scale"] == pytest.approx(4.0)
    w, _ = raw.whitening_matrix(truth["noise"], 4.0)
    np.testing.assert_allclose(w, raw.whitening_matrix(truth["noise"])[0] / 2, rtol=1e-6, atol=1e-9)
    plain = raw.read_mrd(path, prewhiten=False)
    np.testing.assert_allclose(res.kspace, np.tensordot(w, plain.kspace, axes=(1, 0)), rtol=0,
                               atol=1e-5 * np.abs(res.kspace).max())


def test_is_mrd_tells_fastmri_apart(tmp_path, mrd_file):
    path, _ = mrd_file
    fake = tmp_path / "file1000.h5"
    with h5py.File(fake, "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 4, 8, 8), np.complex64))
        f.create_dataset("ismrmrd_header", data=_header_xml())
    assert raw.is_mrd(path) and not raw.is_mrd(fake) and not raw.is_twix(fake) and not raw.is_twix(path)
    with pytest.raises(raw.RawDataError, match="neither an ISMRMRD/MRD .h5 nor a Siemens twix"):
        raw.read_raw(fake)


def test_error_paths(tmp_path):
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    for fn in (raw.read_raw, raw.read_twix, raw.read_mrd):
        with pytest.raises(raw.RawDataError):
            fn(garbage)
    radial = tmp_path / "radial.h5"
    _write_mrd(radial, trajectory="radial")
    with pytest.raises(raw.RawDataError, match="non-Cartesian trajectories are not supported"):
        raw.read_mrd(radial)
    vol = tmp_path / "vol.h5"
    _write_mrd(vol, z=8)
    with pytest.raises(raw.RawDataError, match="3-D acquisitions are not supported"):
        raw.read_mrd(vol)
    ok = _ok(tmp_path)
    for kwargs, message in (({"slice": 5}, "slice 5 out of range"), ({"average": 3}, "average 3 out of range"),
                            ({"repetition": 1}, "repetition 1 out of range"), ({"slice": None}, "has 2 slices")):
        with pytest.raises(raw.RawDataError, match=message):
            raw.read_mrd(ok, **kwargs)
    epi = tmp_path / "epi.h5"
    _write_mrd(epi, trajectory="epi")
    with pytest.raises(raw.RawDataError, match="EPI readouts are not supported"):
        raw.read_mrd(epi)
    noise_only = tmp_path / "noise.h5"
    with ismrmrd.Dataset(str(noise_only), "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(_header_xml())
        acq = ismrmrd.Acquisition.from_array(np.ones((C, 16), np.complex64))
        acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
        dset.append_acquisition(acq)
    with pytest.raises(raw.RawDataError, match="no image scans"):
        raw.read_mrd(noise_only)
    assert isinstance(raw.RawDataError("x"), ValueError)


def _ok(tmp_path: Path) -> Path:
    """A valid synthetic MRD file in ``tmp_path``."""
    path = tmp_path / "ok.h5"
    _write_mrd(path)
    return path


# ------------------------------------------------------------------------------------------- slice counts

def _no_samples(monkeypatch) -> None:
    """Make any read of k-space samples (twix data blocks, MRD acquisitions) fail the test."""
    import twixtools.mdb

    def refuse(*args, **kwargs):
        raise AssertionError("samples read while counting slices")

    monkeypatch.setattr(twixtools.mdb.Mdb, "data", property(refuse))
    monkeypatch.setattr(ismrmrd.Dataset, "read_acquisition", refuse)


def test_count_slices_twix_equals_header(twix_dir, monkeypatch):
    for path in sorted(twix_dir.glob("*.dat")):
        try:
            want = raw.read_raw(path, slice=0).header["num_slices"]
        except raw.RawDataError as exc:            # epi.dat: the count refuses it with the same message
            with pytest.raises(raw.RawDataError) as counted:
                raw.count_slices(path)
            assert str(counted.value) == str(exc)
            continue
        with monkeypatch.context() as m:
            _no_samples(m)
            assert raw.count_slices(path) == want == 1, path


def test_count_slices_mrd_equals_header(mrd_file, tmp_path, monkeypatch):
    path, _ = mrd_file
    want = raw.read_raw(path, slice=1).header["num_slices"]
    _no_samples(monkeypatch)
    assert raw.count_slices(path) == want == 2
    with pytest.raises(raw.RawDataError, match="neither an ISMRMRD/MRD .h5 nor a Siemens twix"):
        raw.count_slices(tmp_path)
    radial = tmp_path / "radial.h5"
    _write_mrd(radial, trajectory="radial")
    with pytest.raises(raw.RawDataError, match="non-Cartesian trajectories are not supported"):
        raw.count_slices(radial)


def _counter_mrd(path: Path, xml_max: int, slices: list[int], navigator_slice: int) -> None:
    """A tiny MRD file: XML slice limit ``xml_max``, one 4-line readout block per entry of ``slices``, a noise
    scan and a navigator readout on ``navigator_slice`` (neither counts)."""
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=8, y=4, z=1),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=8, y=4, z=1)),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=8, y=4, z=1),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=8, y=4, z=1)),
        encodingLimits=xsd.encodingLimitsType(slice=xsd.limitType(minimum=0, maximum=xml_max, center=0)),
        trajectory=xsd.trajectoryType("cartesian"))
    head = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=2), encoding=[enc])
    data = np.ones((2, 8), np.complex64)
    noise = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32).view(np.complex64)  # [2, 8]
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(xsd.ToXML(head))
        for flag, slc in ((ismrmrd.ACQ_IS_NOISE_MEASUREMENT, 0), (ismrmrd.ACQ_IS_NAVIGATION_DATA, navigator_slice)):
            acq = ismrmrd.Acquisition.from_array(noise, sample_time_us=5.0)
            acq.set_flag(flag)
            acq.idx.slice = slc
            dset.append_acquisition(acq)
        for slc in slices:
            for line in range(4):
                acq = ismrmrd.Acquisition.from_array(data * (line + 1), sample_time_us=5.0, center_sample=4)
                acq.idx.kspace_encode_step_1, acq.idx.slice = line, slc
                dset.append_acquisition(acq)


def test_count_slices_property(tmp_path_factory):
    """For any XML slice limit and slice counters, the header-only count is read_raw's num_slices:
    max(XML maximum, largest image-readout slice counter) + 1, noise and navigator readouts ignored."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=25, deadline=None, database=None)
    @hypothesis.given(xml_max=st.integers(0, 6), slices=st.lists(st.integers(0, 5), min_size=1, max_size=4),
                      navigator_slice=st.integers(0, 40))
    def check(xml_max: int, slices: list[int], navigator_slice: int) -> None:
        path = tmp_path_factory.mktemp("count") / "scan.mrd"
        _counter_mrd(path, xml_max, slices, navigator_slice)
        header = raw.read_raw(path, slice=slices[-1]).header
        assert raw.count_slices(path) == header["num_slices"] == max(xml_max, *slices) + 1
        for missing in range(header["num_slices"], header["num_slices"] + 2):
            with pytest.raises(raw.RawDataError, match=f"slice {missing} out of range"):
                raw.read_raw(path, slice=missing)

    check()


# ------------------------------------------------------------------------------------------- coil helpers

def test_coil_compress_energy():
    rng = np.random.default_rng(2)
    sources = _cfft(_phantom(rng)[:2])                              # two independent "true" coils
    mixing = rng.standard_normal((8, 2)) + 1j * rng.standard_normal((8, 2))
    kspace = np.tensordot(mixing, sources, axes=(1, 0))
    kspace = (kspace + 1e-3 * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)))
    kspace = kspace.astype(np.complex64)
    same = raw.coil_compress(kspace, 8)
    assert same.shape == kspace.shape and same.dtype == np.complex64
    np.testing.assert_allclose(_rss(same), _rss(kspace), rtol=1e-4, atol=1e-5 * _rss(kspace).max())
    two = raw.coil_compress(kspace, 2)
    assert two.shape == (2, NY, NX_OS)
    assert (np.abs(two) ** 2).sum() / (np.abs(kspace) ** 2).sum() > 0.999
    calib = raw.coil_compress(kspace, 2, calib=12)
    assert (np.abs(calib) ** 2).sum() / (np.abs(kspace) ** 2).sum() > 0.99
    torch = pytest.importorskip("torch")
    out = raw.coil_compress(torch.from_numpy(kspace), 3)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (3, NY, NX_OS)
    with pytest.raises(raw.RawDataError):
        raw.coil_compress(kspace, 9)


def test_check_maps():
    kspace = np.zeros((4, 8, 8), np.complex64)
    raw.check_maps(kspace, np.zeros((4, 8, 8), np.complex64))
    with pytest.raises(raw.RawDataError, match="coil-count mismatch: k-space has 4 coils, sensitivity maps have 2"):
        raw.check_maps(kspace, np.zeros((2, 8, 8), np.complex64))
