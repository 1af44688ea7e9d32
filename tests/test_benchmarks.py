"""Classical baselines (benchmarks/classical.py) and the benchmark driver (benchmarks/recon_quality.py)."""
from __future__ import annotations

import json
import subprocess

import numpy as np

from score_mri.io import readers as io_utils
import pytest
import torch

import utils
from benchmarks import classical, recon_quality
from conftest import REPO

needs_bart = pytest.mark.skipif(not classical.bart_available(), reason="bart not on PATH (apt-get install bart)")

TINY_CONFIG = '''
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_cfg", Path({repo!r}) / "configs/ve/colin27_ncsnpp_small.py")
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)


def get_config():
    config = _base.get_config()
    config.model.nf = 8
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.num_scales = 4
    return config
'''


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The driver's synthetic 48x48 cases: real, complex single-coil, 4-coil."""
    return {c.family: c for c in recon_quality.tiny_cases(tmp_path_factory.mktemp("tiny"))}


def problem(case, center_fraction=0.25):
    """(ground truth magnitude, mask, measured k-space) for one tiny case, gaussian1d x4."""
    mask = recon_quality.make_mask(case, "gaussian1d:4", seed=0, center_fraction=center_fraction)
    return case.gt, mask, classical.measure(case.x, mask)


def psnr(gt, x):
    return recon_quality.evaluate(gt, x)["psnr"]


def test_zero_filled_matches_the_single_coil_shifted_convention(cases):
    import utils

    x = cases["single-coil"].x
    _, mask, y = problem(cases["single-coil"])
    zf_shifted = utils.ifft2(utils.fft2(torch.from_numpy(x)) * torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(np.abs(classical.zero_filled(y)), np.abs(zf_shifted), atol=1e-5)


def test_calib_width_counts_the_fully_sampled_centre():
    mask = np.zeros((64, 64), np.float32)
    mask[:, 26:40] = 1          # 14 centre columns (32 is the centre)
    mask[:, [3, 50]] = 1        # isolated columns do not count
    assert utils.calib_width(mask) == 13  # sigpy crops [32 - w//2, ...): w = 14 would start at column 25
    mask[:, 10:60] = 1
    assert utils.calib_width(mask) == utils.ESPIRIT_MAX_CALIB
    mask2d = np.zeros((64, 64), np.float32)
    mask2d[25:41, 25:41] = 1    # a 16x16 fully sampled square (2-D masks)
    mask2d[0, :] = 1
    assert utils.calib_width(mask2d) == 15  # sigpy's 16x16 crop starts at 24
    with pytest.raises(ValueError, match="ESPIRiT"):
        utils.calib_width(np.pad(np.ones((64, 4)), ((0, 0), (30, 30))))


@pytest.mark.parametrize("family", ["real", "single-coil"])
def test_sigpy_l1_improves_on_zero_filled_and_keeps_measured_kspace(cases, family):
    gt, mask, y = problem(cases[family])
    x = classical.sigpy_l1(y, mask)
    assert x.shape == gt.shape
    assert psnr(gt, x) > psnr(gt, classical.zero_filled(y)) + 0.3
    sampled = mask.astype(bool)
    err = np.linalg.norm((classical.measure(x, mask) - y)[:, sampled]) / np.linalg.norm(y[:, sampled])
    assert err < 0.05


def test_multi_coil_sigpy_uses_espirit_from_the_measured_centre(cases):
    gt, mask, y = problem(cases["multi-coil"])
    sens = classical.espirit_maps(y, mask)
    assert sens.shape == y.shape and np.abs(sens).max() > 0.5
    x = classical.sigpy_l1(y, mask, lamda=classical.SIGPY_LAMBDA["multi-coil"])
    assert psnr(gt, x) > psnr(gt, classical.zero_filled(y)) + 1.0


def test_cfl_roundtrip_is_column_major(tmp_path):
    a = (np.arange(24).reshape(2, 3, 4) + 1j * np.arange(24).reshape(2, 3, 4)[::-1]).astype(np.complex64)
    io_utils.write_cfl(tmp_path / "a", a)
    np.testing.assert_array_equal(io_utils.read_cfl(tmp_path / "a"), a)
    if classical.bart_available():  # BART's own view of the layout: flip the first dimension
        subprocess.run(["bart", "flip", "1", "a", "b"], cwd=tmp_path, check=True, capture_output=True)
        b = io_utils.read_cfl(tmp_path / "b")                   # BART writes 16 dims: trailing ones are 1
        np.testing.assert_array_equal(b.reshape(a.shape), a[::-1])
        assert b.shape[:3] == a.shape and b.size == a.size


@needs_bart
@pytest.mark.parametrize("family", ["real", "multi-coil"])
def test_bart_pics_improves_on_zero_filled_and_keeps_measured_kspace(cases, family):
    gt, mask, y = problem(cases[family])
    setup = "multi-coil" if family == "multi-coil" else "single-coil"
    x = classical.bart_pics(y, mask, lamda=classical.BART_LAMBDA[setup])
    assert x.shape == gt.shape
    assert psnr(gt, x) > psnr(gt, classical.zero_filled(y)) + 1.0
    if family == "real":
        sampled = mask.astype(bool)
        err = np.linalg.norm((classical.measure(x, mask) - y)[:, sampled]) / np.linalg.norm(y[:, sampled])
        assert err < 0.05


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random-weight tiny NCSN++ checkpoint and its config file."""
    from score_mri.cli.common import load_config
    from models import utils as mutils
    from models.checkpoint import save_checkpoint
    from models.ema import ExponentialMovingAverage

    d = tmp_path_factory.mktemp("model")
    (d / "tiny.py").write_text(TINY_CONFIG.format(repo=str(REPO)))
    config = load_config(d / "tiny.py")
    model = mutils.create_model(config)
    save_checkpoint(d / "tiny.pth", {"model": model, "ema": ExponentialMovingAverage(model.parameters(), 0.999),
                                     "step": 0})
    return d / "tiny.py", d / "tiny.pth"


def test_driver_tiny_mode_runs_every_method(tiny_model, tmp_path, capsys):
    config, ckpt = tiny_model
    assert recon_quality.main(["--tiny", "--N", "2", "--t0", "0.5", "--config", str(config), "--ckpt", str(ckpt),
                               "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "recon_quality.json").read_text())
    methods = {(r["family"], r["method"]) for r in result["rows"]}
    classic = {"zf", "sigpy-L1"} | ({"bart-pics"} if classical.bart_available() else set())
    for family, scores in (("real", ["score"]), ("single-coil", ["score"]),
                           ("multi-coil", ["score-SSOS", "score-hybrid"])):
        expected = classic | {f"{s} N=2" for s in scores} | {f"{s} N=2 t0=0.5" for s in scores}
        assert {m for f, m in methods if f == family} == expected, family
    assert all(np.isfinite(r["seconds"]) for r in result["rows"])
    assert all(np.isfinite(r["psnr"]) for r in result["rows"] if r["method"] in classic)
    md = (tmp_path / "recon_quality.md").read_text()
    assert "| tiny/multi-coil | gaussian1d:4 |" in md and "score-hybrid N=2" in md


def test_driver_skips_the_model_cleanly_without_weights(tmp_path, capsys):
    assert recon_quality.main(["--tiny", "--no_bart", "--ckpt", str(tmp_path / "missing.pth"),
                               "--out", str(tmp_path)]) == 0
    assert "score-MRI: skipped" in capsys.readouterr().out
    result = json.loads((tmp_path / "recon_quality.json").read_text())
    assert "missing.pth" in result["model_skipped"]
    assert {r["method"] for r in result["rows"]} == {"zf", "sigpy-L1"}


def test_driver_rejects_a_bad_mask_spec_in_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        recon_quality.main(["--tiny", "--masks", "gaussian3d:4"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "gaussian3d:4" in err
