"""Any units, any matrix size, any Cartesian mask: every script with a tiny random-weight model.

* units: an input times 1e-6 ... 1e6 gives the same reconstruction (PSNR within 0.1 dB), saved in the input's units;
* sizes: odd and non-square images (37 x 50) run on a zero-padded grid and come back at their own size;
  the padded operators are adjoint and their projection is idempotent with a zero padding region;
* masks: Poisson-disc masks with a small or no calibration region in every complex mode; ESPIRiT with a small
  calibration region, ``--maps FILE`` for user maps, one-line errors where nothing can be calibrated.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_model

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"real": "inference_real.py", "single-coil": "inference_single-coil.py",
           "SSOS": "inference_multi-coil_SSOS.py", "hybrid": "inference_multi-coil_hybrid.py",
           "SENSE": "inference_multi-coil_SENSE.py"}
KINDS = {"real": "real/retrospective", "single-coil": "single-coil", "SSOS": "multi-coil/SSOS",
         "hybrid": "multi-coil/hybrid", "SENSE": "multi-coil/SENSE"}
MULTI = ("SSOS", "hybrid", "SENSE")
COILS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny config (two levels: sides must be even) and a random-weight checkpoint."""
    d = tmp_path_factory.mktemp("tiny_units")
    cfg, ckpt = write_tiny_model(d, "tiny_nf8", nf=8, sampling={"snr": 0.16})
    return {"config": cfg, "ckpt": ckpt}


def phantom(h: int, w: int) -> np.ndarray:
    """A smooth complex image [h, w] with magnitude max 1 and a linear phase."""
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    mag = (x ** 2 / 0.6 + y ** 2 / 0.8 < 0.7) * 0.6 + ((x - 0.2) ** 2 + y ** 2 < 0.1) * 0.4 + 0.05
    img = mag * np.exp(1j * (0.8 * x + 0.3 * y))
    return (img / np.abs(img).max()).astype(np.complex64)


def sensitivities(h: int, w: int) -> np.ndarray:
    """Smooth coil sensitivities [COILS, h, w], normalised to sum_c |S_c|^2 = 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    centres = [(-1, -1), (-1, 1), (1, -1), (1, 1)][:COILS]
    sens = np.stack([np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2) * np.exp(1j * (cx * x + cy * y))
                     for cy, cx in centres])
    return (sens / np.sqrt(np.sum(np.abs(sens) ** 2, axis=0))).astype(np.complex64)


def image_of(key: str, h: int, w: int) -> np.ndarray:
    """The script's image input: magnitude (real), complex image, or coil images."""
    img = phantom(h, w)
    if key == "real":
        return np.abs(img).astype(np.float32)
    return (sensitivities(h, w) * img).astype(np.complex64) if key in MULTI else img


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centered orthonormal FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def write_input(d: Path, key: str, fmt: str, scale: float, h: int = 32, w: int = 32) -> Path:
    """The script's input times ``scale`` as .npy (image), fastMRI .h5 or BART .cfl (k-space)."""
    img = image_of(key, h, w)
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        path = d / "case.npy"
        np.save(path, (img * scale).astype(img.dtype))
        return path
    coils = img if key in MULTI else phantom(h, w)[None]
    ksp = (fft2c(coils) * scale).astype(np.complex64)                   # [C, H, W]
    if fmt == "h5":
        import h5py
        path = d / "case.h5"
        with h5py.File(path, "w") as f:
            f["kspace"] = ksp[None] if key in MULTI else ksp            # [slices, (C,) H, W]
        return path
    from score_mri.io.readers import write_cfl
    write_cfl(d / "case", np.moveaxis(ksp, 0, -1)[None])                # BART [1, H, W, C]
    return d / "case.cfl"


_modules: dict[str, object] = {}


def run(key: str, tiny: dict, *args: str, capsys=None) -> tuple[int, str]:
    """Run a script's entry point in-process; (exit status, stderr)."""
    from score_mri.cli import common as ic
    if key not in _modules:
        spec = importlib.util.spec_from_file_location(f"_units_{key.replace('-', '_')}", REPO / SCRIPTS[key])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _modules[key] = module
    argv = ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu", "--N", "2",
            "--predictor", "dds", "--corrector", "none", "--quiet", *args]  # dds: finite with random weights
    status = 0
    try:
        ic.main(_modules[key].ALGORITHM, argv)
    except SystemExit as e:
        status = e.code
    err = capsys.readouterr().err if capsys is not None else ""
    return status, err


def result(save_dir: Path, key: str, name: str) -> tuple[np.ndarray, dict]:
    """(saved reconstruction, metrics record)."""
    root = save_dir / KINDS[key]
    return np.load(root / "recon" / f"{name}.npy"), json.loads((root / f"{name}_metrics.json").read_text())


def _extra(key: str) -> list[str]:
    """Mask flags: ESPIRiT needs a calibration region of 8 x 8 or more at 32 x 32."""
    return ["--center_fraction", "0.3"] if key in ("hybrid", "SENSE") else []


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """PSNR of |x| against |ref| with the reference's peak."""
    x, ref = np.abs(x), np.abs(ref)
    return float(10 * np.log10(ref.max() ** 2 / np.mean((x - ref) ** 2)))


# ---------------------------------------------------------------------------------------------- units

FORMATS = [(k, f) for k in SCRIPTS for f in ("npy", "h5", "cfl")] + [("real", "npy-complex")]


@pytest.mark.parametrize("key,fmt", FORMATS)
def test_scale_sweep(tmp_path, tiny, capsys, key, fmt):
    """Input x 1e-6 ... 1e6: the saved reconstruction is the x 1 one times the factor; PSNR within 0.1 dB."""
    name = "case_s0" if fmt == "h5" else "case"
    out = {}
    for scale in (1e-6, 1e-3, 1.0, 1e3, 1e6):
        d = tmp_path / f"in{scale:g}"
        if fmt == "npy-complex":  # a complex image through the real-valued script
            d.mkdir()
            np.save(d / "case.npy", (phantom(32, 32) * scale).astype(np.complex64))
            path = d / "case.npy"
        else:
            path = write_input(d, key, fmt, scale)
        status, err = run(key, tiny, "--data", str(path), "--save_dir", str(tmp_path / f"o{scale:g}"),
                          "--mask_type", "uniform1d", "--acc_factor", "2", *_extra(key), capsys=capsys)
        assert status == 0, err
        recon, rec = result(tmp_path / f"o{scale:g}", key, name)
        out[scale] = (recon, rec)
    ref, ref_rec = out[1.0]
    for scale, (recon, rec) in out.items():
        assert abs(rec["recon"]["psnr"] - ref_rec["recon"]["psnr"]) < 0.1, (scale, rec["recon"], ref_rec["recon"])
        assert _psnr(recon / scale, ref) > 60, scale                      # the same image, in the input's units
        np.testing.assert_allclose(rec["scale"] / scale, ref_rec["scale"], rtol=1e-4)


# ---------------------------------------------------------------------------------------------- sizes

def test_padded_operators_are_adjoint_and_project_into_the_crop():
    from score_mri.physics import padding
    from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
    g = torch.Generator().manual_seed(0)
    H, W = 37, 50
    grid = padding.padded_shape((H, W), 8)
    assert grid == (40, 56)
    mask = (torch.rand(1, 1, H, W, generator=g) > 0.5).float()
    sens = torch.randn(1, 3, H, W, dtype=torch.complex64, generator=g)
    cases = [(SingleCoilCartesian(mask), 1, 1), (MultiCoilCartesian(mask.expand(1, 3, H, W)), 3, 3),
             (SENSE(sens, mask), 1, 3)]
    for op, c_img, c_k in cases:
        P = padding.pad_operator(op, grid)
        x = torch.randn(2, c_img, *grid, dtype=torch.complex64, generator=g)
        y = torch.randn(2, c_k, *grid, dtype=torch.complex64, generator=g)
        lhs, rhs = torch.vdot(P.A(x).flatten(), y.flatten()), torch.vdot(x.flatten(), P.A_H(y).flatten())
        assert abs(lhs - rhs) <= 1e-4 * abs(lhs), type(op).__name__
        assert P.A(x).shape[-2:] == grid and P.A_H(y).shape == x.shape
        torch.testing.assert_close(P.normal(x), P.A_H(P.A(x)), rtol=1e-4, atol=1e-4)  # no fast path on the wrong grid
        if not isinstance(op, SENSE):
            yk = P.A(torch.randn(1, c_img, *grid, dtype=torch.complex64, generator=g))
            p1 = P.project(x, yk)
            torch.testing.assert_close(P.project(p1, yk), p1, rtol=1e-4, atol=1e-4)      # idempotent
            torch.testing.assert_close(P.A(p1), yk.expand_as(P.A(p1)), rtol=1e-4, atol=1e-3)  # consistent
            assert not padding.pad(padding.crop(p1, (H, W)), grid).sub(p1).abs().any()     # zero padding region
            assert P.restrict(slice(0, 1)).A(x[:, :1]).shape[1] == 1


@pytest.mark.parametrize("key", list(SCRIPTS))
def test_odd_non_square_size_round_trips(tmp_path, tiny, capsys, key):
    """A 37 x 50 image runs (padded to 38 x 50 for the tiny model) and every output is 37 x 50."""
    path = write_input(tmp_path / "in", key, "npy", 1.0, 37, 50)
    flags = ["--center_fraction", "0.2"] if key in ("hybrid", "SENSE") else []
    status, err = run(key, tiny, "--data", str(path), "--save_dir", str(tmp_path / "o"), "--mask_type", "uniform1d",
                      "--acc_factor", "2", *flags, capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / KINDS[key]
    for rel in ("recon/case.npy", "input/case.npy", "label/case.npy", "input/case_mask.npy"):
        assert np.load(root / rel).shape == (37, 50), rel
    recon, rec = result(tmp_path / "o", key, "case")
    assert np.isfinite(recon).all() and rec["shape"][-2:] == [37, 50]


def test_odd_size_keeps_measured_kspace(tmp_path, tiny, capsys):
    """On the padded grid the data consistency is still exact: the recon's measured k-space equals the data."""
    path = write_input(tmp_path / "in", "single-coil", "npy", 1.0, 37, 50)
    status, err = run("single-coil", tiny, "--data", str(path), "--save_dir", str(tmp_path / "o"),
                      "--mask_type", "uniform1d", "--acc_factor", "2", capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / "single-coil"
    recon, mask = np.load(root / "recon/case.npy"), np.load(root / "input/case_mask.npy")
    label = np.load(root / "label/case.npy")
    k_rec, k_lab = np.fft.fft2(recon) * np.fft.ifftshift(mask), np.fft.fft2(label) * np.fft.ifftshift(mask)
    assert np.abs(k_rec - k_lab).max() < 1e-3 * np.abs(k_lab).max()


# ---------------------------------------------------------------------------------------------- masks

def test_poisson_mask_any_shape_with_calibration():
    from score_mri.physics.masks import calib_width
    from score_mri.physics.phase import calibration_size
    from score_mri.recon import simulate_mask
    m = simulate_mask((1, 1, 37, 50), "poisson", 4, 0.25, seed=0)
    assert m.shape == (1, 1, 37, 50) and 0.15 < float(m.mean()) < 0.5
    assert calibration_size(m) >= (9, 9) and calib_width(m) >= 9
    m0 = simulate_mask((1, 1, 64, 64), "poisson", 4, 0.0, seed=0)
    with pytest.raises(ValueError):
        calibration_size(m0)                                           # no fully sampled centre ...


def test_phase_without_calibration_region_falls_back_to_density_weighted_lowpass():
    from score_mri.errors import UserError
    from score_mri.physics.operators import SingleCoilCartesian
    from score_mri.physics.phase import estimate_phase
    from score_mri.recon import simulate_mask
    H = W = 64
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    inside = (xx ** 2 + yy ** 2) < 0.6
    phi = 1.5 * xx + 0.7 * yy
    x = (inside.float() * torch.polar(torch.ones_like(phi), phi))[None, None].to(torch.complex64)
    mask = simulate_mask((1, 1, H, W), "poisson", 4, 0.0, seed=0)      # ... so the fallback is used
    op = SingleCoilCartesian(mask)
    est = estimate_phase(op, op.A(x), mask)[0, 0]
    err = torch.angle(torch.exp(1j * (est - phi)))[inside].abs()
    assert float(err.median()) < 0.3
    empty = torch.ones(1, 1, H, W)
    empty[..., H // 2 - 8:H // 2 + 8, W // 2 - 8:W // 2 + 8] = 0
    with pytest.raises(UserError, match="no calibration region"):
        estimate_phase(op, op.A(x), empty)


@pytest.mark.parametrize("mode", ["ri", "phase", "phase_ri"])
@pytest.mark.parametrize("key", ["single-coil", "SSOS", "hybrid", "SENSE"])
def test_poisson_in_every_complex_mode(tmp_path, tiny, capsys, key, mode):
    """Poisson masks without (phase) or with a small (ESPIRiT) calibration region in every complex mode."""
    path = write_input(tmp_path / "in", key, "npy", 1.0)
    cf = "0.3" if key in ("hybrid", "SENSE") else "0"
    status, err = run(key, tiny, "--data", str(path), "--save_dir", str(tmp_path / "o"), "--mask_type", "poisson",
                      "--acc_factor", "3", "--center_fraction", cf, "--complex_mode", mode, capsys=capsys)
    assert status == 0, err
    recon, rec = result(tmp_path / "o", key, "case")
    assert recon.shape == (32, 32) and np.isfinite(recon).all() and rec["mask_type"] == "poisson"


def test_poisson_real_and_prospective_no_calibration(tmp_path, tiny, capsys):
    """Real-valued script with Poisson, and a prospective Poisson input without any calibration region."""
    path = write_input(tmp_path / "in", "real", "npy", 1.0)
    status, err = run("real", tiny, "--data", str(path), "--save_dir", str(tmp_path / "o"), "--mask_type", "poisson",
                      capsys=capsys)
    assert status == 0, err
    from score_mri.physics.masks import poisson_pattern
    mask = poisson_pattern((32, 32), 3, seed=1)                         # no calibration block
    img = phantom(32, 32)
    np.save(tmp_path / "pro.npy", np.fft.ifft2(np.fft.fft2(img) * np.fft.ifftshift(mask)).astype(np.complex64))
    np.save(tmp_path / "pro_mask.npy", mask)
    status, err = run("single-coil", tiny, "--data", str(tmp_path / "pro.npy"), "--task", "prospective",
                      "--save_dir", str(tmp_path / "p"), "--complex_mode", "phase", capsys=capsys)
    assert status == 0, err


@pytest.mark.parametrize("key", ["hybrid", "SENSE"])
def test_maps_file_replaces_espirit(tmp_path, tiny, capsys, key):
    """No calibration region: one-line error naming --maps; with --maps FILE (.npy or .cfl) the run works."""
    from score_mri.io.readers import write_cfl
    path = write_input(tmp_path / "in", key, "npy", 1.0)
    base = ["--data", str(path), "--mask_type", "poisson", "--acc_factor", "3", "--center_fraction", "0"]
    status, err = run(key, tiny, *base, "--save_dir", str(tmp_path / "e"), capsys=capsys)
    assert status == 2 and "no calibration region" in err and "--maps" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e" / KINDS[key] / "recon").exists()
    sens = sensitivities(32, 32)
    np.save(tmp_path / "maps.npy", sens)
    write_cfl(tmp_path / "maps", np.moveaxis(sens, 0, -1)[None, :, :, :, None])    # BART [1, H, W, C, 1]
    for f in ("maps.npy", "maps.cfl"):
        status, err = run(key, tiny, *base, "--maps", str(tmp_path / f), "--save_dir", str(tmp_path / f"o_{f}"),
                          capsys=capsys)
        assert status == 0, err
        recon, _ = result(tmp_path / f"o_{f}", key, "case")
        assert recon.shape == (32, 32) and np.isfinite(recon).all()
        assert "warning" not in err                                      # unit-norm maps: taken as they are
    np.save(tmp_path / "maps4.npy", 4 * sens)                            # the same maps, root-sum-of-squares 4
    status, err = run(key, tiny, *base, "--maps", str(tmp_path / "maps4.npy"), "--save_dir", str(tmp_path / "o4"),
                      capsys=capsys)
    assert status == 0 and "peaks at 4" in err and len(err.strip().splitlines()) == 1, err
    scaled, record = result(tmp_path / "o4", key, "case")
    np.testing.assert_allclose(scaled, result(tmp_path / "o_maps.npy", key, "case")[0], rtol=0,
                               atol=1e-4 * np.abs(scaled).max())         # the same image as with unit maps
    assert record["maps_divided_by"] == pytest.approx(4.0, rel=1e-4)


def test_maps_file_errors(tmp_path, tiny, capsys):
    path = write_input(tmp_path / "in", "SENSE", "npy", 1.0)
    sens = sensitivities(32, 32)
    np.save(tmp_path / "coils.npy", sens[:3])
    np.save(tmp_path / "shape.npy", sens[:, :30])
    np.save(tmp_path / "nan.npy", np.full_like(sens, np.nan))
    np.save(tmp_path / "zero.npy", np.zeros_like(sens))
    cases = {"coils.npy": "3 coils", "shape.npy": "30x32", "nan.npy": "NaN", "zero.npy": "all zeros",
             "missing.npy": "not found", "maps.txt": ".npy"}
    (tmp_path / "maps.txt").write_text("x")
    for f, words in cases.items():
        status, err = run("SENSE", tiny, "--data", str(path), "--maps", str(tmp_path / f),
                          "--save_dir", str(tmp_path / "o"), capsys=capsys)
        assert status == 2 and words in err and len(err.strip().splitlines()) == 1, (f, err)
    assert not (tmp_path / "o" / "multi-coil/SENSE" / "recon").exists()


@pytest.mark.parametrize("coils", [False, True])
def test_python_api_any_size_and_units(tiny, coils):
    """``score_mri.reconstruct`` on 37 x 50 k-space: a 37 x 50 image, the same for the k-space times 1e6."""
    import score_mri
    img = (sensitivities(37, 50) * phantom(37, 50)) if coils else phantom(37, 50)
    mask = np.zeros((37, 50), np.float32)
    mask[:, ::2] = 1
    mask[:, 20:30] = 1
    k = fft2c(img).astype(np.complex64) * mask
    kw = dict(config=str(tiny["config"]), ckpt=str(tiny["ckpt"]), device="cpu", N=2, predictor="dds",
              corrector="none")
    if coils:
        kw["coil_maps"] = sensitivities(37, 50)
    a = score_mri.reconstruct(k, mask, **kw)
    b = score_mri.reconstruct(k * 1e6, mask, **kw)
    assert a.image.shape == (37, 50) and np.isfinite(a.image).all()
    assert _psnr(b.image / 1e6, a.image) > 60


@pytest.mark.parametrize("mode", ["phase", "phase_ri"])
@pytest.mark.parametrize("key", ["single-coil", "hybrid", "SENSE"])
def test_odd_size_phase_modes(tmp_path, tiny, capsys, key, mode):
    """Phase estimation and demodulation on the padded grid: 37 x 50 in, 37 x 50 out, finite."""
    path = write_input(tmp_path / "in", key, "npy", 1.0, 37, 50)
    status, err = run(key, tiny, "--data", str(path), "--save_dir", str(tmp_path / "o"), "--mask_type", "poisson",
                      "--acc_factor", "2", "--center_fraction", "0.25", "--complex_mode", mode, capsys=capsys)
    assert status == 0, err
    recon, rec = result(tmp_path / "o", key, "case")
    assert recon.shape == (37, 50) and np.isfinite(recon).all()


def test_phase_mode_without_any_central_samples_is_one_line(tmp_path, tiny, capsys):
    """A prospective mask that samples nothing near the k-space centre: phase modes stop with one line, exit 2."""
    mask = np.ones((32, 32), np.float32)
    mask[8:24, 8:24] = 0
    img = phantom(32, 32)
    np.save(tmp_path / "pro.npy", np.fft.ifft2(np.fft.fft2(img) * np.fft.ifftshift(mask)).astype(np.complex64))
    np.save(tmp_path / "pro_mask.npy", mask)
    status, err = run("single-coil", tiny, "--data", str(tmp_path / "pro.npy"), "--task", "prospective",
                      "--save_dir", str(tmp_path / "o"), "--complex_mode", "phase", capsys=capsys)
    assert status == 2 and "no calibration region" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "single-coil" / "recon").exists()
