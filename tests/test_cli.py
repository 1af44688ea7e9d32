"""End-to-end tests of the four inference scripts with a tiny random-weight model (32 x 32, N = 2).

Every script runs as a subprocess on .npy, fastMRI-like .h5 and BART .cfl inputs; the remaining cases
(prospective inputs, K > 1, bad input) call the same entry point in-process to keep the file fast.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_model

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"real": "inference_real.py", "single-coil": "inference_single-coil.py",
           "SSOS": "inference_multi-coil_SSOS.py", "hybrid": "inference_multi-coil_hybrid.py"}
KINDS = {"real": "real/retrospective", "single-coil": "single-coil", "SSOS": "multi-coil/SSOS",
         "hybrid": "multi-coil/hybrid"}
SIZE, COILS = 32, 4

# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config file and a random-weight checkpoint for it (plus one for a different config)."""
    d = tmp_path_factory.mktemp("tiny")
    cfg8, ckpt8 = write_tiny_model(d, "tiny_nf8", nf=8, sampling={"snr": 0.16})
    _, ckpt16 = write_tiny_model(d, "tiny_nf16", nf=16, sampling={"snr": 0.16})
    return {"config": cfg8, "ckpt": ckpt8, "other_ckpt": ckpt16}


def phantom(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """A smooth complex test image [h, w] with magnitude max 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    mag = (x ** 2 / 0.6 + y ** 2 / 0.8 < 0.7) * 0.6 + ((x - 0.2) ** 2 + y ** 2 < 0.1) * 0.4
    img = mag * np.exp(1j * 0.5 * x)
    return (img / np.abs(img).max()).astype(np.complex64)


def coil_images(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """Multi-coil images [COILS, h, w] with smooth synthetic sensitivities."""
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    centres = [(-1, -1), (-1, 1), (1, -1), (1, 1)][:COILS]
    sens = np.stack([np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2) * np.exp(1j * (cx * x + cy * y))
                     for cy, cx in centres])
    return (sens * phantom(h, w)).astype(np.complex64)


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centered orthonormal FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def column_mask(w: int, every: int = 3) -> np.ndarray:
    """A 1-D column mask [w] with a fully sampled centre."""
    m = np.zeros(w, np.float32)
    m[::every] = 1
    m[w // 2 - 2:w // 2 + 2] = 1
    return m


def expected_label(key: str, fmt: str) -> np.ndarray:
    """The label the scripts should save: the cropped image in the algorithm's domain, in the input's units."""
    multi = key in ("SSOS", "hybrid")
    h, w = (SIZE + 8, SIZE + 4) if fmt == "h5" else (SIZE, SIZE)
    img = coil_images(h, w) if multi else phantom(h, w)[None]
    img = img[:, (h - SIZE) // 2:(h - SIZE) // 2 + SIZE, (w - SIZE) // 2:(w - SIZE) // 2 + SIZE]
    img = 0.5 * img if fmt == "h5" else img  # the .h5 file's slice 1 holds half the image
    if key == "real" or multi:
        return np.sqrt(np.sum(np.abs(img) ** 2, axis=0))  # magnitude (real) or RSS (coils)
    return img[0]


def make_input(tmp_path: Path, key: str, fmt: str) -> tuple[Path, str, tuple[int, int]]:
    """Write an input file of format fmt for script key; return (path, expected name, image shape)."""
    multi = key in ("SSOS", "hybrid")
    if fmt == "npy":
        img = coil_images() if multi else (np.abs(phantom()) if key == "real" else phantom())
        path = tmp_path / "case.npy"
        np.save(path, img)
        return path, "case", (SIZE, SIZE)
    if fmt == "h5":
        import h5py
        h, w = SIZE + 8, SIZE + 4                                  # cropped to 32 x 32 in image space
        coils = coil_images(h, w) if multi else phantom(h, w)[None]
        ksp = np.stack([fft2c(coils), 0.5 * fft2c(coils)])          # [slices, C, H, W]
        path = tmp_path / "case.h5"
        with h5py.File(path, "w") as f:
            f["kspace"] = ksp if multi else ksp[:, 0]              # single-coil files: [slices, H, W]
        return path, "case_s1", (SIZE, SIZE)
    assert fmt == "cfl"
    from score_mri.io.readers import write_cfl
    coils = coil_images() if multi else phantom()[None]
    ksp = fft2c(coils)                                              # [C, H, W]
    write_cfl(tmp_path / "case", np.moveaxis(ksp, 0, -1)[None])     # BART [1, H, W, C]
    return tmp_path / "case.cfl", "case", (SIZE, SIZE)


def run_cli(key: str, tiny: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a script as a subprocess on CPU with the tiny model."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / SCRIPTS[key]), "--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]),
           "--device", "cpu", "--N", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


_modules: dict[str, object] = {}


def script(key: str):
    """Import a script module (file names contain hyphens)."""
    if key not in _modules:
        spec = importlib.util.spec_from_file_location(f"_cli_{key.replace('-', '_')}", REPO / SCRIPTS[key])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[key] = module
    return _modules[key]


def run_inproc(key: str, tiny: dict, *args: str, capsys=None) -> tuple[int, str, str]:
    """Call the script's main() in-process; return (exit status, stdout, stderr)."""
    from score_mri.cli import common as ic
    argv = ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu", "--N", "2", *args]
    status = 0
    try:
        ic.main(script(key).ALGORITHM, argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return status, out, err


def files_under(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()] if d.exists() else []


# ---------------------------------------------------------------------------------------------- end to end

# One subprocess run per script (covering every input format); the other combinations run in-process.
SUBPROCESS = {("real", "npy"), ("single-coil", "h5"), ("SSOS", "cfl"), ("hybrid", "h5")}


@pytest.mark.parametrize("fmt", ["npy", "h5", "cfl"])
@pytest.mark.parametrize("key", list(SCRIPTS))
def test_script_end_to_end(tmp_path, tiny, capsys, monkeypatch, key, fmt):
    data, name, shape = make_input(tmp_path, key, fmt)
    save_dir = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["--data", str(data), "--save_dir", str(save_dir), "--mask_type", "gaussian1d", "--acc_factor", "2",
            "--seed", "3"]
    if key == "hybrid":  # ESPIRiT needs a fully sampled centre of at least 12x12 (32x32 test images)
        args += ["--center_fraction", "0.5"]
    if (key, fmt) in SUBPROCESS:
        proc = run_cli(key, tiny, *args, cwd=cwd)
        status, out, err = proc.returncode, proc.stdout, proc.stderr
    else:
        monkeypatch.chdir(cwd)
        status, out, err = run_inproc(key, tiny, *args, capsys=capsys)
    assert status == 0, err
    assert not files_under(cwd), "--save_dir must be respected (nothing under the working folder)"
    root = save_dir / KINDS[key]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"{name}: ZF ") and "dB" in summary and str(root) in summary
    for rel in ("input/{n}.npy", "input/{n}.png", "input/{n}_mask.npy", "label/{n}.npy", "label/{n}.png",
                "recon/{n}.npy", "recon/{n}.png", "{n}_metrics.json", "{n}_figure.png"):
        assert (root / rel.format(n=name)).is_file(), rel
    assert not (root / "recon" / f"{name}_std.npy").exists()
    assert list((root / "recon_progress").glob(f"{name}_*.png")), "progress images from the sampler callback"
    recon, label = np.load(root / "recon" / f"{name}.npy"), np.load(root / "label" / f"{name}.npy")
    mask = np.load(root / "input" / f"{name}_mask.npy")
    assert recon.shape == label.shape == mask.shape == shape
    np.testing.assert_allclose(label, expected_label(key, fmt), atol=2e-5)  # FFT conventions, crop, scale
    assert np.isfinite(recon).all()
    assert set(np.unique(mask)) <= {0.0, 1.0} and 0 < mask.mean() < 1
    if key == "single-coil":
        assert np.iscomplexobj(recon) and np.iscomplexobj(label)
    else:
        assert not np.iscomplexobj(recon)
    if key == "hybrid":
        sens = np.load(root / "sens" / f"{name}.npy")
        assert sens.shape == (COILS, *shape)
    rec = json.loads((root / f"{name}_metrics.json").read_text())
    for k in ("psnr", "ssim", "nmse"):
        assert np.isfinite(rec["recon"][k]) and np.isfinite(rec["zero_filled"][k])
    assert rec["N"] == 2 and rec["seed"] == 3 and rec["mask_type"] == "gaussian1d" and rec["acc_factor"] == 2
    assert rec["network_calls"] > 0 and rec["seconds"] >= 0
    assert rec["config"] == str(tiny["config"].resolve()) and rec["ckpt"] == str(tiny["ckpt"].resolve())
    assert not list(root.glob(".tmp-*")), "scratch folder removed"


def test_zero_filled_metrics_match_label(tmp_path, tiny, capsys):
    """The saved metrics are the fastMRI metrics of the saved images."""
    from score_mri import metrics
    data, name, _ = make_input(tmp_path, "single-coil", "npy")
    status, out, _ = run_inproc("single-coil", tiny, "--data", str(data), "--save_dir", str(tmp_path / "o"),
                                "--acc_factor", "2", capsys=capsys)
    assert status == 0
    root = tmp_path / "o" / "single-coil"
    label = np.abs(np.load(root / "label" / f"{name}.npy"))
    np.testing.assert_allclose(label, np.abs(phantom()), atol=1e-6)
    rec = json.loads((root / f"{name}_metrics.json").read_text())
    zf, recon = np.abs(np.load(root / "input" / f"{name}.npy")), np.abs(np.load(root / "recon" / f"{name}.npy"))
    assert rec["zero_filled"]["psnr"] == pytest.approx(metrics.psnr(label, zf), rel=1e-6)
    assert rec["recon"]["ssim"] == pytest.approx(metrics.ssim(label, recon), rel=1e-6)


@pytest.mark.parametrize("complex_input", [True, False])
def test_real_prospective(tmp_path, tiny, capsys, complex_input):
    """Prospective: an aliased image (complex or real) plus {stem}_mask.npy; no label, own output folder."""
    import torch
    from utils import fft2, ifft2
    mask = np.broadcast_to(column_mask(SIZE), (SIZE, SIZE)).astype(np.float32)
    aliased = ifft2(fft2(torch.from_numpy(np.abs(phantom()))) * torch.from_numpy(mask)).numpy()
    np.save(tmp_path / "pro.npy", aliased if complex_input else aliased.real.astype(np.float32))
    np.save(tmp_path / "pro_mask.npy", column_mask(SIZE))           # a 1-D column mask is accepted
    status, out, err = run_inproc("real", tiny, "--data", str(tmp_path / "pro.npy"), "--task", "prospective",
                                  "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / "real" / "prospective"
    assert not (tmp_path / "o" / "real" / "retrospective").exists()
    assert (root / "recon" / "pro.npy").is_file() and not (root / "label").exists()
    np.testing.assert_array_equal(np.load(root / "input" / "pro_mask.npy"), mask)
    zf = np.load(root / "input" / "pro.npy")
    if complex_input:  # exact measured data: the zero-filled input is the aliased image's real part
        np.testing.assert_allclose(zf, aliased.real, atol=1e-5)
    else:              # a real aliased image loses the odd part of the data
        expected = ifft2(fft2(torch.from_numpy(aliased.real.astype(np.complex64))) * torch.from_numpy(mask))
        np.testing.assert_allclose(zf, expected.real.numpy(), atol=1e-5)
    rec = json.loads((root / "pro_metrics.json").read_text())
    assert rec["recon"] is None and rec["mask_type"] == "given" and rec["task"] == "prospective"
    assert "recon (no label)" in out


def test_prospective_kspace_file_detects_mask(tmp_path, tiny, capsys):
    """A .h5 file storing a mask (fastMRI test data) is prospective: its mask is used, rows are cropped."""
    import h5py
    m = column_mask(SIZE + 4)
    ksp = fft2c(coil_images(SIZE + 8, SIZE + 4)) * m                # [C, 40, 36], zeros in skipped columns
    with h5py.File(tmp_path / "test.h5", "w") as f:
        f["kspace"] = ksp[None]
        f["mask"] = m.astype(bool)
    status, out, err = run_inproc("SSOS", tiny, "--data", str(tmp_path / "test.h5"), "--slice", "0",
                                  "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / "multi-coil" / "SSOS"
    assert np.load(root / "recon" / "test_s0.npy").shape == (SIZE, SIZE + 4)
    np.testing.assert_array_equal(np.load(root / "input" / "test_s0_mask.npy")[0], m)
    assert json.loads((root / "test_s0_metrics.json").read_text())["task"] == "prospective"


@pytest.mark.parametrize("fmt", ["h5", "cfl"])
def test_recon_keeps_measured_kspace(tmp_path, tiny, capsys, fmt):
    """Data consistency through the whole pipeline (Algorithm 3): the recon's sampled k-space is the label's."""
    import torch
    from utils import fft2
    key = "single-coil"
    data, name, _ = make_input(tmp_path, key, fmt)
    status, _, err = run_inproc(key, tiny, "--data", str(data), "--corrector", "none", "--acc_factor", "2",
                                "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / KINDS[key]
    mask = torch.from_numpy(np.load(root / "input" / f"{name}_mask.npy"))
    recon = torch.from_numpy(np.load(root / "recon" / f"{name}.npy")).to(torch.complex64)
    label = torch.from_numpy(np.load(root / "label" / f"{name}.npy")).to(torch.complex64)
    Fy = fft2(label) * mask
    err = (fft2(recon) * mask - Fy).abs().max() / Fy.abs().max()
    assert err < 1e-3
    assert ((fft2(recon) - fft2(label)) * (1 - mask)).abs().max() > 1e-2  # unsampled part was sampled anew


def test_fast_mode_t0(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "real", "npy")
    status, _, err = run_inproc("real", tiny, "--data", str(data), "--t0", "0.3", "--save_dir", str(tmp_path / "o"),
                                capsys=capsys)
    assert status == 0, err
    rec = json.loads((tmp_path / "o" / "real" / "retrospective" / f"{name}_metrics.json").read_text())
    assert rec["fast"] is True and rec["t0"] == 0.3


def test_h5_crop_to_stored_reconstruction(tmp_path, tiny, capsys):
    """Real algorithm on a multi-coil .h5: crop to reconstruction_rss's size, label = RSS in the input's units."""
    import h5py
    coils = coil_images(SIZE + 8, SIZE + 4)
    with h5py.File(tmp_path / "train.h5", "w") as f:
        f["kspace"] = fft2c(coils)[None]
        f["reconstruction_rss"] = np.zeros((1, 24, 24), np.float32)
    status, _, err = run_inproc("real", tiny, "--data", str(tmp_path / "train.h5"), "--save_dir", str(tmp_path / "o"),
                                capsys=capsys)
    assert status == 0, err
    label = np.load(tmp_path / "o" / "real" / "retrospective" / "label" / "train_s0.npy")
    rss = np.sqrt(np.sum(np.abs(coils) ** 2, axis=0))[8:32, 6:30]  # centre 24 x 24 of 40 x 36
    np.testing.assert_allclose(label, rss, atol=2e-5 * rss.max())  # in the input's units


def test_num_samples_writes_std(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "single-coil", "npy")
    status, out, err = run_inproc("single-coil", tiny, "--data", str(data), "--num_samples", "2",
                                  "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / "single-coil"
    std = np.load(root / "recon" / f"{name}_std.npy")
    assert std.shape == (SIZE, SIZE) and not np.iscomplexobj(std) and (std >= 0).all() and std.max() > 0
    assert (root / "recon" / f"{name}_std.png").is_file()
    rec = json.loads((root / f"{name}_metrics.json").read_text())
    assert rec["num_samples"] == 2


def test_seed_reproducible(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "real", "npy")
    outs = []
    for run in ("a", "b"):
        status, _, err = run_inproc("real", tiny, "--data", str(data), "--seed", "7",
                                    "--save_dir", str(tmp_path / run), capsys=capsys)
        assert status == 0, err
        outs.append(np.load(tmp_path / run / "real" / "retrospective" / "recon" / f"{name}.npy"))
    np.testing.assert_array_equal(*outs)


def test_hybrid_sens_cache_keyed_by_input(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "hybrid", "npy")
    save = str(tmp_path / "o")
    status, _, err = run_inproc("hybrid", tiny, "--data", str(data), "--save_dir", save, "--center_fraction", "0.5", "--m_steps", "1",
                                capsys=capsys)
    assert status == 0, err
    sens_path = tmp_path / "o" / "multi-coil" / "hybrid" / "sens" / f"{name}.npy"
    sens = np.load(sens_path)
    np.save(sens_path, sens * 0 + 1)                                 # a cache hit keeps the cached maps
    status, _, err = run_inproc("hybrid", tiny, "--data", str(data), "--save_dir", save, "--center_fraction", "0.5",
                                "--overwrite", capsys=capsys)       # other settings (m_steps): --overwrite
    assert status == 0, err
    np.testing.assert_array_equal(np.load(sens_path), 1)
    status, _, err = run_inproc("hybrid", tiny, "--data", str(data), "--save_dir", save, "--center_fraction", "0.5", "--espirit_from_full",
                                "--overwrite", capsys=capsys)       # another calibration: recomputed
    assert status == 0, err
    assert not np.allclose(np.load(sens_path), 1)


# ---------------------------------------------------------------------------------------------- bad input

def _bad_cases(tmp_path: Path, tiny: dict) -> dict[str, tuple[str, list[str]]]:
    good = tmp_path / "good.npy"
    np.save(good, phantom())
    np.save(tmp_path / "nan.npy", np.full((SIZE, SIZE), np.nan, np.float32))
    np.save(tmp_path / "rank.npy", np.zeros((2, 3, SIZE, SIZE), np.complex64))
    (tmp_path / "junk.npy").write_bytes(b"\x00not numpy at all")
    np.save(tmp_path / "pro.npy", phantom())
    np.save(tmp_path / "pro_mask.npy", np.ones((SIZE, SIZE + 2), np.float32))
    np.save(tmp_path / "mc.npy", phantom())                          # 2-D where coils are expected
    np.save(tmp_path / "mc_good.npy", coil_images())
    return {
        "missing file": ("single-coil", ["--data", str(tmp_path / "nope.npy")]),
        "unknown sample": ("single-coil", ["--data", "no_such_sample"]),
        "unreadable array": ("single-coil", ["--data", str(tmp_path / "junk.npy")]),
        "wrong rank": ("single-coil", ["--data", str(tmp_path / "rank.npy")]),
        "no coil axis": ("SSOS", ["--data", str(tmp_path / "mc.npy")]),
        "nan": ("real", ["--data", str(tmp_path / "nan.npy")]),
        "mask mismatch": ("real", ["--data", str(tmp_path / "pro.npy"), "--task", "prospective"]),
        "missing mask": ("real", ["--data", str(good), "--task", "prospective"]),
        "checkpoint mismatch": ("single-coil", ["--data", str(good), "--ckpt", str(tiny["other_ckpt"])]),
        "missing checkpoint": ("single-coil", ["--data", str(good), "--ckpt", str(tmp_path / "x.pth")]),
        "N < 1": ("single-coil", ["--data", str(good), "--N", "0"]),
        "bad flag": ("single-coil", ["--data", str(good), "--mask_type", "radial"]),
        "hybrid m_steps": ("hybrid", ["--data", str(tmp_path / "mc_good.npy"), "--m_steps", "0"]),
        "hybrid calibration": ("hybrid", ["--data", str(tmp_path / "mc_good.npy"), "--center_fraction", "0.1"]),
    }


@pytest.mark.parametrize("case", ["missing file", "unknown sample", "unreadable array", "wrong rank",
                                  "no coil axis", "nan", "mask mismatch", "missing mask", "checkpoint mismatch",
                                  "missing checkpoint", "N < 1", "bad flag", "hybrid m_steps",
                                  "hybrid calibration"])
def test_bad_input_exits_2(tmp_path, tiny, capsys, case):
    key, args = _bad_cases(tmp_path, tiny)[case]
    save_dir = tmp_path / "o"
    status, out, err = run_inproc(key, tiny, *args, "--save_dir", str(save_dir), capsys=capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err, err
    assert "Traceback" not in err
    assert not files_under(save_dir)


def test_bad_input_subprocess(tmp_path, tiny):
    """The real entry point: one stderr line, exit status 2, no traceback, no results."""
    np.save(tmp_path / "nan.npy", np.full((SIZE, SIZE), np.inf, np.float32))
    for args in (["--data", str(tmp_path / "nan.npy")], ["--data", str(tmp_path / "nan.npy"), "--N", "zero"]):
        proc = run_cli("real", tiny, *args, "--save_dir", str(tmp_path / "o"))
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not files_under(tmp_path / "o")


# ---------------------------------------------------------------------------------------------- reliability

def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_all_zero_image_is_refused(tmp_path, tiny, capsys):
    np.save(tmp_path / "zero.npy", np.zeros((SIZE, SIZE), np.float32))
    status, _, err = run_inproc("real", tiny, "--data", str(tmp_path / "zero.npy"), "--save_dir", str(tmp_path / "o"),
                                capsys=capsys)
    assert status == 2 and "all zeros" in err and len(err.strip().splitlines()) == 1
    assert not _files(tmp_path / "o")


@pytest.mark.parametrize("flag", ["--snr", "--t0", "--acc_factor", "--eta", "--residual_smoothing"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_float_flags_are_refused(tmp_path, tiny, capsys, flag, value):
    data, _, _ = make_input(tmp_path, "real", "npy")
    status, _, err = run_inproc("real", tiny, "--data", str(data), f"{flag}={value}", "--save_dir",
                                str(tmp_path / "o"), capsys=capsys)
    assert status == 2 and "finite" in err and len(err.strip().splitlines()) == 1
    assert not _files(tmp_path / "o")


def test_negative_residual_smoothing_is_refused_in_one_line(tmp_path, tiny, capsys):
    data, _, _ = make_input(tmp_path, "single-coil", "npy")
    status, _, err = run_inproc("single-coil", tiny, "--data", str(data), "--residual_smoothing", "-1",
                                "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 2 and "residual_smoothing" in err and len(err.strip().splitlines()) == 1
    assert not _files(tmp_path / "o")


def test_save_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, tiny, capsys, monkeypatch):
    from score_mri import recon
    data, _, _ = make_input(tmp_path, "real", "npy")
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(recon, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    status, _, err = run_inproc("real", tiny, "--data", str(data), "--save_dir", str(tmp_path / "afile"),
                                capsys=capsys)
    assert status == 2 and "not a folder" in err


def test_non_finite_reconstruction_exits_nonzero_and_keeps_the_earlier_result(tmp_path, tiny, capsys, monkeypatch):
    import sampling
    data, name, _ = make_input(tmp_path, "real", "npy")
    out = tmp_path / "o"
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), capsys=capsys)[0] == 0
    before = {p: (out / p).read_bytes() for p in _files(out)}
    real = sampling.SAMPLERS["real"]

    def nan_sampler(*a, **k):
        result = real(*a, **k)
        return sampling.Result(result.x * float("nan"), result.network_calls)

    monkeypatch.setitem(sampling.SAMPLERS, "real", nan_sampler)
    status, _, err = run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), capsys=capsys)
    assert status != 0 and "not finite" in err
    assert {p: (out / p).read_bytes() for p in _files(out)} == before


def test_result_set_is_replaced_whole_and_dead_scratch_removed(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "real", "npy")
    out = tmp_path / "o"
    root = out / KINDS["real"]
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), "--num_samples", "2",
                      capsys=capsys)[0] == 0
    assert (root / "recon" / f"{name}_std.npy").is_file()
    stale = root / "recon_progress" / f"{name}_9999.png"
    stale.write_bytes(b"old")
    dead = root / ".tmp-old-999999999"
    dead.mkdir()
    (dead / "x.npy").write_bytes(b"partial")
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), "--overwrite", capsys=capsys)[0] == 0
    assert not (root / "recon" / f"{name}_std.npy").exists(), "an old _std beside a new K=1 recon"
    assert not stale.exists() and not dead.exists()


def test_oversized_input_is_refused_by_the_memory_estimate(tmp_path, tiny, capsys, monkeypatch):
    from score_mri import recon
    data, _, _ = make_input(tmp_path, "real", "npy")
    monkeypatch.setattr(recon, "available_memory", lambda device: 1 << 20)  # a 1 MiB machine
    monkeypatch.setattr(recon, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    status, _, err = run_inproc("real", tiny, "--data", str(data), "--save_dir", str(tmp_path / "o"), capsys=capsys)
    assert status == 2 and "GiB" in err and "--skip_memory_check" in err
    assert not _files(tmp_path / "o")


def test_memory_estimate_grows_with_size_and_batch():
    from score_mri import recon
    from score_mri.cli.flags import load_config
    config = load_config(REPO / "configs" / "ve" / "colin27_ncsnpp_small.py")
    small, big = recon.estimate_memory(config, (320, 320), 1), recon.estimate_memory(config, (4096, 4096), 1)
    assert big > 50 * 2 ** 30 > small  # 4096^2: the bottleneck attention alone is far beyond a workstation
    assert recon.estimate_memory(config, (192, 192), 16) > recon.estimate_memory(config, (192, 192), 1)


def test_multi_coil_results_are_saved_in_the_input_units(tmp_path, tiny, capsys):
    img = coil_images() * 250.0  # arbitrary scanner units
    np.save(tmp_path / "big.npy", img)
    out = tmp_path / "o"
    assert run_inproc("SSOS", tiny, "--data", str(tmp_path / "big.npy"), "--save_dir", str(out), capsys=capsys)[0] == 0
    label = np.load(out / KINDS["SSOS"] / "label" / "big.npy")
    np.testing.assert_allclose(label, np.sqrt(np.sum(np.abs(img) ** 2, axis=0)), rtol=1e-5)
    zf = np.load(out / KINDS["SSOS"] / "input" / "big.npy")      # RSS of the zero-filled coil images
    assert 0.3 * label.max() < zf.max() < 1.5 * label.max()


def test_result_of_the_same_name_with_other_settings_is_refused_unless_overwrite(tmp_path, tiny, capsys):
    data, name, _ = make_input(tmp_path, "real", "npy")
    out = tmp_path / "o"
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), capsys=capsys)[0] == 0
    before = {p: (out / p).read_bytes() for p in _files(out)}
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), capsys=capsys)[0] == 0  # same: ok
    status, _, err = run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), "--snr", "0.3",
                                capsys=capsys)
    assert status == 2 and "--overwrite" in err and "snr" in err and len(err.strip().splitlines()) == 1
    assert {p: (out / p).read_bytes() for p in _files(out)}.keys() == before.keys()
    assert run_inproc("real", tiny, "--data", str(data), "--save_dir", str(out), "--snr", "0.3", "--overwrite",
                      capsys=capsys)[0] == 0
    assert json.loads((out / KINDS["real"] / f"{name}_metrics.json").read_text())["snr"] == 0.3
