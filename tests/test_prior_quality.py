"""benchmarks/prior_quality.py in --quick mode on one 64 x 64 image: the report's structure, finite values, the
EMA weights of a training snapshot, and the shipped prior denoising better than a randomly initialised one."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "ve" / "colin27_ncsnpp_small.py"
SHIPPED = REPO / "weights" / "colin27_ncsnpp_small.pth"
SIGMAS = ("0.01", "0.05", "0.2", "1", "5")


def _finite(v) -> bool:
    """A finite real number."""
    return isinstance(v, (int, float)) and math.isfinite(v)


def _write_checkpoints(pq, directory: Path) -> tuple[Path, Path]:
    """A random-weight checkpoint (seed 0) and a training snapshot whose EMA is shipped but whose model is not.

    The snapshot's model has the shipped weights plus noise on every trainable parameter (frozen ones, such as
    the Fourier frequencies, stay as trained, as in a real snapshot), so only the EMA gives the shipped loss.
    """
    flags, mutils, ckpt, ema_mod = (pq.project_module(k) for k in ("flags", "mutils", "checkpoint", "ema"))
    config = flags.load_config(CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        random_model = mutils.create_model(config)
        shipped = mutils.create_model(config)
        other = mutils.create_model(config)
        ckpt.load_model_weights(SHIPPED, shipped)                    # EMA weights of the shipped prior
        ckpt.load_model_weights(SHIPPED, other)
        with torch.no_grad():
            for p in other.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
    random_path = directory / "random.pth"
    ckpt.save_checkpoint(random_path, {"model": random_model, "step": 0,
                                       "ema": ema_mod.ExponentialMovingAverage(random_model.parameters(), decay=0.99)})
    ema = ema_mod.ExponentialMovingAverage(shipped.parameters(), decay=config.model.ema_rate)
    optimizer = torch.optim.Adam(other.parameters(), lr=1e-4)
    snapshot_path = directory / "checkpoint.pth"
    ckpt.save_checkpoint(snapshot_path, {"model": other, "ema": ema, "optimizer": optimizer, "step": 123})
    return random_path, snapshot_path


def test_prior_quality_quick(shared: Path, tmp_path: Path) -> None:
    """Quick run: structure and finite values; snapshot = shipped (EMA used); shipped beats random at every sigma."""
    data = shared / "data"
    if not (data / "ANTsPy" / "data" / "r16slice.jpg").is_file():
        msg = f"{data / 'ANTsPy'} not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- required when CI=true")
        pytest.skip(msg)
    from benchmarks import prior_quality as pq

    random_path, snapshot_path = _write_checkpoints(pq, tmp_path)
    result = pq.main(["--quick", "--size", "64", "--N", "2", "--sources", "ants", "--kinds", "real",
                      "--ckpt", f"shipped={CONFIG}:{SHIPPED}", "--ckpt", f"snapshot={CONFIG}:{snapshot_path}",
                      "--ckpt", f"random={CONFIG}:{random_path}", "--data_root", str(data), "--out", str(tmp_path)])

    on_disk = json.loads((tmp_path / "prior_quality.json").read_text())
    assert on_disk["checkpoints"].keys() == result["checkpoints"].keys() == {"shipped", "snapshot", "random"}
    assert "| shipped |" in (tmp_path / "prior_quality.md").read_text()
    assert [im["name"] for im in on_disk["images"]] == ["ants:r16"] and on_disk["images"][0]["shape"] == [64, 64]
    bart = on_disk["settings"]["bart"]
    for name, c in on_disk["checkpoints"].items():
        assert set(c["dsm"]) == set(SIGMAS) and all(_finite(v) and v >= 0 for v in c["dsm"].values()), name
        assert set(c["dsm_by_source"]) == {"ants"}
        real = c["recon"]["real"]
        assert real["images"] == 1 and real["network_calls"] == 2 and _finite(real["psnr"]) and 0 < real["ssim"] <= 1
        if bart:
            assert _finite(real["dpsnr_bart"]) and _finite(real["dssim_bart"])
    if bart:
        assert _finite(on_disk["reference"]["BART pics-l1"]["real"]["psnr"])

    ck = on_disk["checkpoints"]
    assert ck["snapshot"]["file"]["step"] == 123 and ck["snapshot"]["file"]["training_snapshot"]
    assert ck["snapshot"]["file"]["ema_weights"] and not ck["shipped"]["file"]["training_snapshot"]
    for s in SIGMAS:  # the snapshot's EMA holds the shipped weights: the same loss, not the random model's
        assert ck["snapshot"]["dsm"][s] == pytest.approx(ck["shipped"]["dsm"][s], rel=1e-4), s
        assert ck["shipped"]["dsm"][s] < ck["random"]["dsm"][s], (s, ck["shipped"]["dsm"][s], ck["random"]["dsm"][s])


def test_prior_spec_takes_precision_and_complex_mode() -> None:
    """NAME=CONFIG:PATH[@PRECISION][#MODE]: both suffixes optional, in that order; an unknown mode is refused."""
    import argparse

    from benchmarks import prior_quality as pq

    plain = pq.parse_prior(f"a={CONFIG}:{SHIPPED}")
    assert (plain.name, plain.path, plain.precision, plain.complex_mode) == ("a", SHIPPED, "fp32", None)
    both = pq.parse_prior(f"b={CONFIG}:{SHIPPED}@bf16#phase")
    assert (both.path, both.precision, both.complex_mode) == (SHIPPED, "bf16", "phase")
    mode_only = pq.parse_prior(f"c={CONFIG}:{SHIPPED}#phase_ri")
    assert (mode_only.path, mode_only.precision, mode_only.complex_mode) == (SHIPPED, "fp32", "phase_ri")
    for bad in (f"d={CONFIG}:{SHIPPED}#sideways", f"e={CONFIG}:{SHIPPED}@fp16#phase"):
        with pytest.raises(argparse.ArgumentTypeError):
            pq.parse_prior(bad)


def test_t0_override_reaches_the_sampler_settings() -> None:
    """--t0 T starts every sampler at T (1: from noise, whatever the config); a T outside (1e-5, 1] is refused."""
    from benchmarks import prior_quality as pq
    from score_mri.samplers.pc_loop import from_prior

    config = pq.project_module("flags").load_config(CONFIG)
    default = pq.sampler_settings(config, None, "cpu", coils=False)
    assert from_prior(default) == (not config.sampling.get("fast", False))
    for coils in (False, True):
        lower = pq.sampler_settings(config, None, "cpu", coils=coils, t0=0.65)
        assert lower.t0 == 0.65 and not from_prior(lower)
        assert from_prior(pq.sampler_settings(config, None, "cpu", coils=coils, t0=1.0))
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            pq.parse_args(["--t0", bad])
    assert pq._start({"t0": 1.0}, {"settings": {"t0": 0.7}}) == "t0 0.7 (noised zero-filled)"
    assert pq._start({"t0": 1.0}, {"settings": {}}) == "noise (t = 1)"
