"""Raw scanner files through the reconstruction commands: ISMRMRD/MRD (synthetic) and Siemens twix (gre.dat).

A tiny random-weight NCSN++ (N = 2) runs the multi-coil and single-coil scripts in-process on synthetic MRD
files (fully sampled -> retrospective with a label, undersampled -> prospective), on ``.mrd`` and ``.h5`` names,
with ``--coils K`` compression; bad raw files (neither layout, no image scans, a coil-count mismatch with the
maps, ``--coils`` out of range) end with one line on stderr and exit status 2.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_tiny_model

ismrmrd = pytest.importorskip("ismrmrd")
pytest.importorskip("twixtools")
import ismrmrd.xsd as xsd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NY, NX = 32, 32                     # phase encodes, readout after oversampling removal (64 samples acquired)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny config file and a random-weight checkpoint for it."""
    cfg, ckpt = write_tiny_model(tmp_path_factory.mktemp("tiny"), sampling={"predictor": "dds", "corrector": "none"})
    return {"config": cfg, "ckpt": ckpt}


def _cfft(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def write_mrd(path: Path, coils: int = 4, mask: np.ndarray | None = None, slices: int = 1,
              noise: bool = True, images: bool = True, averages: int = 1) -> np.ndarray:
    """A Cartesian MRD file (2x readout oversampling, optional noise scans); returns its coil images [C, NY, 2NX]."""
    yy, xx = np.mgrid[:NY, :2 * NX]
    obj = (((yy - NY / 2) / 11) ** 2 + ((xx - NX) / 12) ** 2 < 1) \
        + 0.5 * (((yy - 12) / 3) ** 2 + ((xx - 30) / 4) ** 2 < 1)
    centres = [(0, 16), (0, 48), (32, 16), (32, 48)][:coils]
    img = np.array([obj * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 600) * np.exp(1j * k)
                    for k, (cy, cx) in enumerate(centres)]).astype(np.complex64)
    ksp = _cfft(img).astype(np.complex64)                                        # [C, ky, kx]
    mask = np.ones(NY, bool) if mask is None else mask
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=2 * NX, y=NY, z=1),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=400, y=200, z=5)),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=NX, y=NY, z=1),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=200, y=200, z=5)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=NY - 1, center=NY // 2),
            slice=xsd.limitType(minimum=0, maximum=slices - 1, center=0)),
        trajectory=xsd.trajectoryType("cartesian"))
    head = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=coils), encoding=[enc])
    rng = np.random.default_rng(0)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as dset:
        dset.write_xml_header(xsd.ToXML(head))
        if noise:
            data = (rng.standard_normal((coils, 256)) + 1j * rng.standard_normal((coils, 256))) * 1e-3
            acq = ismrmrd.Acquisition.from_array(data.astype(np.complex64), sample_time_us=5.0)
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            dset.append_acquisition(acq)
        for slc in range(slices if images else 0):
            for ave in range(averages):                  # average a holds (1 + slice) * (1 + 2 a) times the data
                for line in np.flatnonzero(mask):
                    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(ksp[:, line] * (1 + slc) * (1 + 2 * ave)),
                                                         sample_time_us=5.0, center_sample=NX)
                    acq.idx.kspace_encode_step_1 = int(line)
                    acq.idx.slice, acq.idx.average = slc, ave
                    dset.append_acquisition(acq)
    return img


def run(key: str, tiny: dict, *args: str, capsys=None) -> tuple[int, str, str]:
    """One reconstruction command in-process (tiny model, N=2); (exit status, stdout, stderr)."""
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import SCRIPTS
    argv = ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu", "--N", "2",
            "--acc_factor", "2", "--center_fraction", "0.4", "--quiet", *args]
    status = 0
    try:
        ic.main(SCRIPTS[key], argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return status, out, err


def metrics(save: Path, kind: str, name: str) -> dict:
    """The metrics JSON of one result."""
    return json.loads((save / kind / f"{name}_metrics.json").read_text())


# ---------------------------------------------------------------------------------------------- MRD

@pytest.mark.parametrize("key,kind", [("sense", "multi-coil/SENSE"), ("ssos", "multi-coil/SSOS"),
                                      ("hybrid", "multi-coil/hybrid")])
def test_mrd_multicoil_retrospective(tmp_path, tiny, capsys, key, kind):
    data = tmp_path / "scan.h5"
    write_mrd(data)
    status, out, err = run(key, tiny, "--data", str(data), "--save_dir", str(tmp_path / "out"), capsys=capsys)
    assert status == 0, err
    rec = metrics(tmp_path / "out", kind, "scan_s0")
    assert rec["task"] == "retrospective" and rec["shape"] == [4, NX, NY] and rec["recon"]["psnr"] > 0
    recon = np.load(tmp_path / "out" / kind / "recon" / "scan_s0.npy")
    label = np.load(tmp_path / "out" / kind / "label" / "scan_s0.npy")
    assert recon.shape == label.shape == (NX, NY) and np.isfinite(recon).all()
    assert 0.05 < rec["sampled_fraction"] < 1


def test_mrd_suffix_prospective_and_coils(tmp_path, tiny, capsys):
    mask = np.zeros(NY, bool)
    mask[::2] = True
    mask[NY // 2 - 6:NY // 2 + 6] = True                                          # 12 central lines
    data = tmp_path / "under.mrd"
    write_mrd(data, mask=mask)
    status, out, err = run("sense", tiny, "--data", str(data), "--save_dir", str(tmp_path / "out"), "--coils", "2",
                           capsys=capsys)
    assert status == 0, err
    rec = metrics(tmp_path / "out", "multi-coil/SENSE", "under_s0")
    assert rec["task"] == "prospective" and rec["recon"] is None and rec["shape"] == [2, NX, NY]
    saved = np.load(tmp_path / "out" / "multi-coil/SENSE" / "input" / "under_s0_mask.npy")
    np.testing.assert_array_equal(saved, np.broadcast_to(mask[None, :].astype(np.float32), (NX, NY)))
    assert rec["run_key"]["coils"] == 2


def test_coils_on_cfl_and_npy_inputs(tmp_path, tiny, capsys):
    from score_mri.io.readers import InputKind, read_problem, write_cfl
    img = write_mrd(tmp_path / "unused.h5")[..., NX // 2:NX // 2 + NX]                # [4, NY, NX] coil images
    ksp = _cfft(img)
    mask = np.zeros(NX, bool)
    mask[::2] = True
    mask[NX // 2 - 6:NX // 2 + 6] = True
    write_cfl(tmp_path / "ksp", np.moveaxis(ksp * mask, 0, -1)[:, :, None, :])     # BART [H, W, 1, C]
    status, _, err = run("sense", tiny, "--data", str(tmp_path / "ksp.cfl"), "--coils", "2",
                         "--save_dir", str(tmp_path / "out"), capsys=capsys)
    assert status == 0, err
    rec = metrics(tmp_path / "out", "multi-coil/SENSE", "ksp")
    assert rec["task"] == "prospective" and rec["shape"] == [2, NY, NX]
    np.save(tmp_path / "coils.npy", img)
    kind = InputKind("multi-coil", coils=True, real_valued=False)
    full, two = (read_problem(tmp_path / "coils.npy", kind, None, None, 32, coils=k) for k in (None, 2))
    assert two.image.shape == (2, NY, NX) and np.abs(two.image).max() == pytest.approx(1.0)
    rss = lambda p: np.sqrt((np.abs(p.image) ** 2).sum(0)) * p.scale                  # noqa: E731
    assert np.linalg.norm(rss(two)) / np.linalg.norm(rss(full)) > 0.95               # most energy in 2 of 4


def test_single_coil_mrd_and_compressed_to_one(tmp_path, tiny, capsys):
    one = tmp_path / "one.h5"
    write_mrd(one, coils=1, noise=False)
    status, _, err = run("single-coil", tiny, "--data", str(one), "--save_dir", str(tmp_path / "out"), capsys=capsys)
    assert status == 0, err
    assert metrics(tmp_path / "out", "single-coil", "one_s0")["recon"]["psnr"] > 0
    four = tmp_path / "four.h5"
    write_mrd(four)
    status, _, err = run("single-coil", tiny, "--data", str(four), "--save_dir", str(tmp_path / "out"), capsys=capsys)
    assert status == 2 and err.count("\n") == 1 and "4 coils" in err
    status, _, err = run("single-coil", tiny, "--data", str(four), "--save_dir", str(tmp_path / "out"),
                         "--coils", "1", capsys=capsys)
    assert status == 0, err
    assert metrics(tmp_path / "out", "single-coil", "four_s0")["shape"] == [1, NX, NY]


def test_mrd_slices_and_volume(tmp_path, tiny, capsys):
    data = tmp_path / "multi.h5"
    write_mrd(data, slices=2)
    status, _, err = run("sense", tiny, "--data", str(data), "--slice", "1", "--save_dir", str(tmp_path / "one"),
                         capsys=capsys)
    assert status == 0, err
    assert metrics(tmp_path / "one", "multi-coil/SENSE", "multi_s1")["task"] == "retrospective"
    from score_mri.io.readers import InputKind, read_problem
    kind = InputKind("multi-coil", coils=True, real_valued=False)
    middle, last = read_problem(data, kind, None, None, 32), read_problem(data, kind, None, -1, 32)
    assert middle.name == last.name == "multi_s1"                 # the middle of 2 slices; -1 counts from the end
    assert read_problem(data, kind, None, 0, 32).scale == pytest.approx(middle.scale / 2, rel=1e-5)
    status, out, err = run("sense", tiny, "--data", str(data), "--slice", "all", "--save_dir", str(tmp_path / "vol"),
                           capsys=capsys)
    assert status == 0, err
    with h5py.File(tmp_path / "vol" / "multi-coil/SENSE" / "reconstructions" / "multi.h5", "r") as f:
        volume = f["reconstruction"][()]
    assert volume.shape == (2, NX, NY)
    nib = pytest.importorskip("nibabel")
    img = nib.load(str(tmp_path / "vol" / "multi-coil/SENSE" / "reconstructions" / "multi.nii.gz"))
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.transpose(volume, (1, 2, 0)))
    np.testing.assert_allclose(img.affine, np.diag([200 / NX, 200 / NY, 5.0, 1.0]))   # reconSpace FOV / matrix


# ---------------------------------------------------------------------------------------------- NIfTI

def test_nifti_spacing_from_fastmri_header_and_identity(tmp_path):
    nib = pytest.importorskip("nibabel")
    from score_mri.io import nifti
    xml = (b'<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>'
           b"<encodedSpace><matrixSize><x>640</x><y>368</y><z>1</z></matrixSize><fieldOfView_mm><x>280</x>"
           b"<y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace><reconSpace><matrixSize><x>320</x><y>320</y>"
           b"<z>1</z></matrixSize><fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>"
           b"</encoding></ismrmrdHeader>")
    src = tmp_path / "file1.h5"
    with h5py.File(src, "w") as f:
        f["kspace"] = np.zeros((2, 8, 8), np.complex64)
        f["ismrmrd_header"] = xml
    assert nifti.spacing_of(src) == pytest.approx((140 / 320, 140 / 320, 3.0))
    vol = np.random.default_rng(0).random((3, 6, 4)).astype(np.float32)
    out = nifti.write_beside(tmp_path / "reconstructions" / "file1.h5", vol, src)
    assert out.name == "file1.nii.gz" and not list(out.parent.glob(".*tmp*"))
    img = nib.load(str(out))
    assert img.shape == (6, 4, 3) and img.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.transpose(vol, (1, 2, 0)))
    np.testing.assert_allclose(img.header.get_zooms(), (140 / 320, 140 / 320, 3.0), rtol=1e-6)
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f["kspace"] = np.zeros((2, 8, 8), np.complex64)
    assert nifti.spacing_of(bare) is None and nifti.spacing_of(tmp_path / "missing.h5") is None
    np.testing.assert_array_equal(nib.load(str(nifti.write_nifti(tmp_path / "id.nii.gz", vol[0]))).affine, np.eye(4))


def test_nifti_spacing_of_twix(gre):
    from score_mri.io import nifti
    row, col, thick = nifti.spacing_of(gre)
    assert row == pytest.approx(200 / 160) and col == pytest.approx(200 / 160) and thick > 0


def test_average_selection(tmp_path, tiny, capsys):
    from score_mri.io.readers import InputKind, read_problem
    data = tmp_path / "aves.mrd"
    write_mrd(data, averages=2, noise=False)
    kind = InputKind("multi-coil", coils=True, real_valued=False)
    mean, first, second = (read_problem(data, kind, None, None, 32, average=a) for a in (None, 0, 1))
    assert mean.scale == pytest.approx(2 * first.scale, rel=1e-5) and second.scale == pytest.approx(3 * first.scale,
                                                                                                    rel=1e-5)
    np.testing.assert_allclose(second.image, first.image, atol=1e-5)
    status, _, err = run("sense", tiny, "--data", str(data), "--average", "1", "--save_dir", str(tmp_path / "o"),
                         capsys=capsys)
    assert status == 0, err
    assert metrics(tmp_path / "o", "multi-coil/SENSE", "aves_s0")["run_key"]["average"] == 1
    np.save(tmp_path / "img.npy", first.image)
    for argv, fragment in ((["--data", str(data), "--average", "2"], "average 2 out of range"),
                           (["--data", str(tmp_path / "img.npy"), "--average", "0"], "--average applies to raw")):
        status, _, err = run("sense", tiny, *argv, "--save_dir", str(tmp_path / "o2"), capsys=capsys)
        assert status == 2 and err.count("\n") == 1 and fragment in err, err


# ---------------------------------------------------------------------------------------------- twix

@pytest.fixture(scope="module")
def gre(shared) -> Path:
    """The twixtools GRE phantom (2 coils, 160 x 160 after oversampling removal, fully sampled)."""
    path = shared / "data" / "twixtools" / "example_data" / "gre.dat"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("key,kind", [("ssos", "multi-coil/SSOS"), ("sense", "multi-coil/SENSE")])
def test_twix_multicoil(tmp_path, tiny, capsys, gre, key, kind):
    status, _, err = run(key, tiny, "--data", str(gre), "--save_dir", str(tmp_path), "--center_fraction", "0.08",
                         capsys=capsys)
    assert status == 0, err
    rec = metrics(tmp_path, kind, "gre_s0")
    assert rec["task"] == "retrospective" and rec["shape"] == [2, 160, 160]
    assert rec["zero_filled"]["psnr"] > 15                                       # a real phantom, not noise


def test_twix_single_coil_with_coils_1_script(tmp_path, tiny, gre):
    """The top-level script (a subprocess) on the twix file, compressed to one virtual coil."""
    cmd = [sys.executable, str(REPO / "inference_single-coil.py"), "--config", str(tiny["config"]), "--ckpt",
           str(tiny["ckpt"]), "--device", "cpu", "--N", "2", "--data", str(gre), "--coils", "1", "--quiet",
           "--save_dir", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                                 "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr
    assert metrics(tmp_path, "single-coil", "gre_s0")["shape"] == [1, 160, 160]


# ---------------------------------------------------------------------------------------------- raw volumes

def _recon_names(root: Path) -> list[str]:
    """Names of the per-slice reconstructions under a results folder."""
    return sorted(p.stem for p in (root / "recon").glob("*.npy"))


def test_slice_all_and_range_on_mrd(tmp_path, tiny, capsys):
    """``--slice all`` on a raw .mrd: one result <stem>_s<i> per slice (slice i of the file), one volume, the
    summary; a sub-range rerun with the same settings recomputes nothing and keeps the whole volume."""
    data = tmp_path / "three.mrd"
    write_mrd(data, slices=3, noise=False)
    save = tmp_path / "out"
    status, _, err = run("ssos", tiny, "--data", str(data), "--slice", "all", "--save_dir", str(save), capsys=capsys)
    assert status == 0, err
    root = save / "multi-coil/SSOS"
    assert _recon_names(root) == ["three_s0", "three_s1", "three_s2"]
    labels = [np.load(root / "label" / f"three_s{i}.npy") for i in range(3)]
    for i in (1, 2):                                            # slice i holds (1 + i) times the data
        np.testing.assert_allclose(labels[i], (1 + i) * labels[0], rtol=1e-4, atol=1e-6 * labels[2].max())
    summary = json.loads((root / "summary.json").read_text())
    (volume,) = summary["volumes"]
    assert volume["volume"] == "three" and volume["slices"] == [0, 1, 2] and volume["target"] == "fully sampled"
    with h5py.File(root / "reconstructions" / "three.h5", "r") as f:
        assert f["reconstruction"].shape == (3, NX, NY)
    stamps = {p: p.stat().st_mtime_ns for p in (root / "recon").glob("*.npy")}
    status, _, err = run("ssos", tiny, "--data", str(data), "--slice", "1:3", "--save_dir", str(save), capsys=capsys)
    assert status == 0, err
    assert {p: p.stat().st_mtime_ns for p in (root / "recon").glob("*.npy")} == stamps
    assert json.loads((root / "summary.json").read_text())["volumes"][0]["slices"] == [0, 1, 2]


def test_folder_and_glob_with_twix_and_mrd(tmp_path, tiny, capsys, gre):
    """A folder holding a twix .dat (a link to gre.dat) and a 2-slice .mrd: every slice of both; a glob of the
    .dat then finds its result done."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "gre.dat").symlink_to(gre)
    write_mrd(folder / "two.mrd", slices=2, noise=False)
    save = tmp_path / "out"
    status, out, err = run("ssos", tiny, "--data", str(folder), "--center_fraction", "0.08", "--save_dir", str(save),
                           capsys=capsys)
    assert status == 0, err
    root = save / "multi-coil/SSOS"
    assert _recon_names(root) == ["gre_s0", "two_s0", "two_s1"]
    summary = json.loads((root / "summary.json").read_text())
    assert {v["volume"]: v["slices"] for v in summary["volumes"]} == {"gre": [0], "two": [0, 1]}
    assert metrics(save, "multi-coil/SSOS", "gre_s0")["shape"] == [2, 160, 160]
    with h5py.File(root / "reconstructions" / "gre.h5", "r") as f:
        assert f["reconstruction"].shape == (1, 160, 160)
    stamp = (root / "recon" / "gre_s0.npy").stat().st_mtime_ns
    status, _, err = run("ssos", tiny, "--data", str(folder / "*.dat"), "--center_fraction", "0.08",
                         "--save_dir", str(save), capsys=capsys)
    assert status == 0, err
    assert (root / "recon" / "gre_s0.npy").stat().st_mtime_ns == stamp


def test_slice_out_of_range_on_raw_files_exit_2(tmp_path, tiny, capsys, gre):
    """A slice index or range outside a raw file: one line on stderr, exit status 2, no result written."""
    data = tmp_path / "two.mrd"
    write_mrd(data, slices=2, noise=False)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "gre.dat").symlink_to(gre)
    epi = gre.with_name("epi.dat")
    cases = [(["--data", str(data), "--slice", "2"], "slice 2 out of range"),
             (["--data", str(data), "--slice", "-3"], "--slice -3 out of range"),
             (["--data", str(data), "--slice", "2:5"], "selects no slice"),
             (["--data", str(gre), "--slice", "1"], "slice 1 out of range"),
             (["--data", str(folder), "--slice", "1"], "--slice 1 out of range")]
    if epi.exists():                                        # refused while the slices are counted
        (tmp_path / "epi").mkdir()
        (tmp_path / "epi" / "epi.dat").symlink_to(epi)
        cases.append((["--data", str(tmp_path / "epi")], "EPI readouts are not supported"))
    for argv, fragment in cases:
        status, _, err = run("ssos", tiny, *argv, "--save_dir", str(tmp_path / "out"), capsys=capsys)
        assert status == 2 and err.count("\n") == 1 and fragment in err, (argv, err)
        assert not (tmp_path / "out" / "multi-coil/SSOS" / "recon").exists(), argv


# ---------------------------------------------------------------------------------------------- bad files

def _bad_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    """(extra argv, expected fragment of the one-line error) for each bad raw input."""
    garbage = tmp_path / "garbage.dat"
    garbage.write_bytes(np.random.default_rng(1).bytes(4096))
    neither = tmp_path / "neither.h5"
    with h5py.File(neither, "w") as f:
        f["images"] = np.zeros((2, 4, 4), np.float32)
    noise_only = tmp_path / "noise.h5"
    write_mrd(noise_only, images=False)
    ok = tmp_path / "ok.mrd"
    write_mrd(ok)
    renamed = tmp_path / "notmrd.mrd"
    shutil.copy(neither, renamed)
    return [(["--data", str(garbage)], "neither an ISMRMRD/MRD .h5 nor a Siemens twix"),
            (["--data", str(neither)], "neither a fastMRI nor an ISMRMRD/MRD file"),
            (["--data", str(renamed)], "neither an ISMRMRD/MRD .h5 nor a Siemens twix"),
            (["--data", str(noise_only)], "no image scans"),
            (["--data", str(ok), "--coils", "9"], "--coils 9"),
            (["--data", str(ok), "--slice", "3"], "slice 3 out of range")]


def test_bad_raw_files_exit_2(tmp_path, tiny, capsys):
    for argv, fragment in _bad_cases(tmp_path):
        status, out, err = run("sense", tiny, *argv, "--save_dir", str(tmp_path / "out"), capsys=capsys)
        assert status == 2, (argv, err)
        assert err.count("\n") == 1 and fragment in err, (argv, err)
        assert not (tmp_path / "out" / "multi-coil/SENSE" / "recon").exists()


def test_coil_count_mismatch_with_maps_exits_2(tmp_path, tiny, capsys, monkeypatch):
    from score_mri.physics import sens_maps
    data = tmp_path / "scan.h5"
    write_mrd(data)
    real = sens_maps.espirit
    monkeypatch.setattr(sens_maps, "espirit", lambda ksp, width: real(ksp, width)[:3])   # maps of 3 coils
    for key in ("sense", "hybrid"):
        status, _, err = run(key, tiny, "--data", str(data), "--save_dir", str(tmp_path / "out"), capsys=capsys)
        assert status == 2 and err.count("\n") == 1, err
        assert "coil-count mismatch: k-space has 4 coils, sensitivity maps have 3" in err
    monkeypatch.setattr(sens_maps, "espirit", real)
    maps = tmp_path / "maps4.npy"                        # maps of the 4 physical coils, data compressed to 2
    np.save(maps, np.ones((4, NX, NY), np.complex64) / 2)
    for argv in (["--maps", str(maps), "--coils", "2"], ["--maps", str(maps)]):
        status, _, err = run("sense", tiny, "--data", str(data), "--save_dir", str(tmp_path / "out2"), *argv,
                             capsys=capsys)
        if "--coils" in argv:
            assert status == 2 and err.count("\n") == 1 and "has 4 coils, the k-space has 2" in err, err
        else:
            assert status == 0, err


def test_bad_raw_file_script_one_line(tmp_path, tiny):
    """The top-level multi-coil script: a twix-named file that is not one -> one line, exit 2."""
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\0" * 100)
    cmd = [sys.executable, str(REPO / "inference_multi-coil_SSOS.py"), "--config", str(tiny["config"]), "--ckpt",
           str(tiny["ckpt"]), "--device", "cpu", "--data", str(bad), "--save_dir", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "twix" in res.stderr, res.stderr
