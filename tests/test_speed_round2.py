"""Inference precision (bf16 autocast of the network call), the sign-modulated centered FFT and the round-two
speed benchmark: behaviour only, no timing assertions."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from models import utils as mutils
from score_mri import perf, recon
from score_mri.physics import fft
from score_mri.physics.operators import SENSE
from score_mri.sde import VESDE
from conftest import REPO, write_tiny_model


def tiny_model(precision: str | None):
    """A seeded 2-level NCSN++ (every layer re-randomised) marked with ``precision``, and its config."""
    from score_mri.config import load_config
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        cfg_path, _ = write_tiny_model(Path(d))
        config = load_config(cfg_path)
    g = torch.Generator().manual_seed(0)
    model = mutils.create_model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".W"):
                continue  # Fourier frequencies keep their construction
            offset = 1.0 if "GroupNorm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + offset)
    return perf.prepare_model_for_inference(model, "cpu", precision=precision), config


def body_conv(model) -> torch.nn.Module:
    """The first convolution of the first residual block (the U-Net's body, not its ends)."""
    return next(m.Conv_0 for m in model.all_modules if hasattr(m, "Conv_0"))


def score_of(model, config, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The sampler's score function s(x, t) of ``model`` (the path every sampler calls the network through)."""
    sde = VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max, N=config.model.num_scales)
    with torch.inference_mode():
        return mutils.get_score_fn(sde, model, train=False, continuous=True)(x, t)


def test_bf16_score_matches_fp32_within_bf16_rounding():
    model, config = tiny_model("fp32")
    g = torch.Generator().manual_seed(1)
    x, t = torch.rand(2, 1, 32, 32, generator=g), torch.tensor([0.3, 0.7])
    ref = score_of(model, config, x, t)
    perf.set_inference_precision(model, "bf16")
    out = score_of(model, config, x, t)
    assert out.dtype == torch.float32 == x.dtype  # the sampler's arithmetic stays float32
    rel = float((out - ref).norm() / ref.norm())
    assert 0 < rel < 2e-2  # bf16 keeps 8 bits of mantissa: ~0.4 % per rounding, a few % at most here


@pytest.mark.parametrize("precision,expected", [("bf16", torch.bfloat16), ("fp32", torch.float32),
                                                (None, torch.float32)])
def test_precision_mark_decides_the_dtype_inside_the_network(precision, expected):
    model, config = tiny_model(precision)
    seen = []
    body_conv(model).register_forward_hook(lambda m, inp, out: seen.append(out.dtype))
    score_of(model, config, torch.rand(1, 1, 32, 32), torch.tensor([0.5]))
    assert seen == [expected]
    assert perf.model_precision(model) == precision


def test_bf16_keeps_the_network_ends_in_float32():
    """Noise embedding, input convolution and output head run in float32 inside the bf16 network."""
    model, config = tiny_model("bf16")
    ends = [0, 1, 2, 3, len(model.all_modules) - 2, len(model.all_modules) - 1]
    seen = {}
    for i in ends:
        model.all_modules[i].register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, out.dtype))
    body_conv(model).register_forward_hook(lambda m, inp, out: seen.__setitem__("body", out.dtype))
    score_of(model, config, torch.rand(1, 1, 32, 32), torch.tensor([0.5]))
    assert {i: seen[i] for i in ends} == {i: torch.float32 for i in ends}
    assert seen["body"] == torch.bfloat16


def test_training_calls_are_not_autocast():
    model, config = tiny_model("bf16")
    seen = []
    model.all_modules[-1].register_forward_hook(lambda m, inp, out: seen.append(out.dtype))
    mutils.get_model_fn(model, train=True)(torch.rand(1, 1, 32, 32), torch.tensor([1.0]))
    assert seen == [torch.float32]  # training has its own bf16 switch (config.training.bf16)


def test_resolve_precision(monkeypatch):
    assert perf.resolve_precision("fp32") == "fp32" and perf.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(perf, "cpu_has_bf16", lambda: True)
    assert perf.resolve_precision("auto", "cpu") == "bf16" and perf.resolve_precision(None, "cpu") == "bf16"
    monkeypatch.setattr(perf, "cpu_has_bf16", lambda: False)
    assert perf.resolve_precision("auto", "cpu") == "fp32"
    assert perf.default_precision("meta") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        perf.resolve_precision("fp16")


def test_cpu_has_bf16_reads_the_cpu_flags():
    flags = open("/proc/cpuinfo").read() if sys.platform.startswith("linux") else ""
    assert perf.cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_precision_flag_reaches_the_model_and_the_metrics(tmp_path):
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import REAL

    cfg, ckpt = write_tiny_model(tmp_path, sampling={"N": 2, "predictor": "dds", "corrector": "none"})
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    np.save(tmp_path / "img.npy", img)
    common = ["--data", str(tmp_path / "img.npy"), "--task", "retrospective", "--config", str(cfg), "--ckpt",
              str(ckpt), "--quiet", "--threads", "1"]
    records = {}
    for precision in ("fp32", "bf16"):
        records[precision] = ic.run(REAL, common + ["--precision", precision, "--save_dir",
                                                    str(tmp_path / precision)])
        saved = json.loads(next((tmp_path / precision).rglob("img_metrics.json")).read_text())
        assert saved["precision"] == precision
    assert records["fp32"]["run_key"] == records["bf16"]["run_key"]  # precision is not part of the result's key
    assert abs(records["fp32"]["recon"]["psnr"] - records["bf16"]["recon"]["psnr"]) < 3.0


@pytest.mark.parametrize("has_bf16", [True, False])
def test_default_precision_follows_the_hardware_and_faithful_stays_float32(tmp_path, monkeypatch, has_bf16):
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import REAL

    monkeypatch.setattr(perf, "cpu_has_bf16", lambda: has_bf16)
    cfg, ckpt = write_tiny_model(tmp_path, sampling={"N": 2, "predictor": "dds", "corrector": "none"})
    np.save(tmp_path / "img.npy", np.random.default_rng(0).random((32, 32)).astype(np.float32))
    common = ["--data", str(tmp_path / "img.npy"), "--task", "retrospective", "--config", str(cfg), "--ckpt",
              str(ckpt), "--quiet", "--threads", "1"]
    default = ic.run(REAL, common + ["--save_dir", str(tmp_path / "default")])
    assert default["precision"] == ("bf16" if has_bf16 else "fp32")
    faithful = ic.run(REAL, common + ["--save_dir", str(tmp_path / "faithful"), "--faithful", "--predictor",
                                      "reverse_diffusion", "--corrector", "none"])
    assert faithful["precision"] == "fp32"


def test_load_model_marks_precision_and_refuses_unknown():
    from score_mri.config import load_config
    from score_mri.errors import UserError
    from score_mri.paths import DEFAULT_CKPT, DEFAULT_CONFIG

    config = load_config(DEFAULT_CONFIG)
    assert perf.model_precision(recon.load_model(config, DEFAULT_CKPT, "cpu")) == "fp32"  # the default
    assert perf.model_precision(recon.load_model(config, DEFAULT_CKPT, "cpu", "bf16")) == "bf16"
    with pytest.raises(UserError, match="precision"):
        recon.load_model(config, DEFAULT_CKPT, "cpu", "int8")


# ----------------------------------------------------------------------------------------------------------
# Centered FFT: sign modulation against the shift copies
# ----------------------------------------------------------------------------------------------------------

def _shifted(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """The previous formulation: fftshift(F(ifftshift(x))) with explicit shift copies."""
    d = (-2, -1)
    f = torch.fft.ifftn if inverse else torch.fft.fftn
    return fft.fftshift(f(fft.ifftshift(x, dim=d), dim=d, norm="ortho"), dim=d)


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 4, 6, 6), (1, 2, 10, 4), (1, 1, 320, 320), (1, 2, 7, 8),
                                   (1, 1, 5, 5)])
@pytest.mark.parametrize("inverse", [False, True])
def test_centered_fft_equals_the_shift_formulation(shape, inverse):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.complex128, generator=g)
    f = fft.ifft2c if inverse else fft.fft2c
    torch.testing.assert_close(f(x), _shifted(x, inverse), rtol=0, atol=1e-13)
    x32 = x.to(torch.complex64)
    torch.testing.assert_close(f(x32), _shifted(x32, inverse), rtol=0, atol=1e-5)
    assert f(x32).dtype == torch.complex64


def test_centered_fft_switch_restores_the_shift_path(monkeypatch):
    x = torch.randn(1, 3, 8, 8, dtype=torch.complex64)
    monkeypatch.setattr(fft, "SIGN_MODULATION", False)
    assert torch.equal(fft.fft2c(x), _shifted(x, False))  # bit for bit the previous code


def test_sense_normal_operator_unchanged_by_the_fft_path(monkeypatch):
    g = torch.Generator().manual_seed(0)
    sens = torch.randn(1, 5, 16, 16, dtype=torch.complex128, generator=g)
    mask = (torch.rand(1, 1, 1, 16, generator=g) < 0.5).double().expand(1, 1, 16, 16)
    x = torch.randn(1, 1, 16, 16, dtype=torch.complex128, generator=g)
    op = SENSE(sens, mask)
    new = op.normal(x)
    monkeypatch.setattr(fft, "SIGN_MODULATION", False)
    torch.testing.assert_close(new, op.normal(x), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# The benchmark script
# ----------------------------------------------------------------------------------------------------------

def test_speed_round2_quick_writes_the_table(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    pytest.importorskip("sigpy")
    from benchmarks import speed_round2

    data = speed_round2.main(["--quick", "--repeats", "1", "--cases", "sense_8x256", "--threads", "1",
                              "--out", str(tmp_path)])
    rows = data["rows"]
    assert [r["variant"] for r in rows] == list(speed_round2.SENSE_VARIANTS)
    assert rows[0]["speedup_sampling"] == 1.0 and all(r["network_calls"] == 2 for r in rows)
    assert abs(rows[1]["psnr"] - rows[0]["psnr"]) < 1e-3  # the FFT path does not change the result
    md = (tmp_path / "speed_round2.md").read_text()
    assert "| sense_8x256 | bf16 |" in md and "QUICK run" in md
    saved = json.loads((tmp_path / "speed_round2.json").read_text())
    assert [run["precision"] for r in saved["rows"] for run in r["runs"]] == ["fp32", "fp32", "bf16"]


@pytest.mark.parametrize("shape", [(1, 5, 16, 16), (2, 3, 10, 6), (1, 2, 12, 14), (1, 4, 9, 8)])
def test_sense_fast_normal_equals_adjoint_of_forward(shape):
    g = torch.Generator().manual_seed(0)
    B, C, H, W = shape
    sens = torch.randn(1, C, H, W, dtype=torch.complex64, generator=g)
    mask = (torch.rand(1, 1, 1, W, generator=g) < 0.5).float().expand(1, 1, H, W)
    x = torch.randn(B, 1, H, W, dtype=torch.complex64, generator=g)
    op = SENSE(sens, mask)
    assert (op._modulated_maps(x) is not None) == (H % 2 == 0 and W % 2 == 0)
    assert torch.equal(op.normal(x), op.A_H(op.A(x)))  # sign flips are exact: bit for bit
    op.maps.sens = sens * 2  # new maps: the cached modulated maps follow
    torch.testing.assert_close(op.normal(x), op.A_H(op.A(x)))
