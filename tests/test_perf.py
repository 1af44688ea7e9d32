"""Behaviour of the runtime speed settings (perf.py) and of the benchmark helpers; no timing assertions."""
from __future__ import annotations

import copy
import importlib
import platform

import ml_collections
import pytest
import torch

from score_mri import perf
from benchmarks import common
from models import utils as mutils


def tiny_config(size: int = 16) -> ml_collections.ConfigDict:
    """A 2-level NCSN++ with FIR resampling, BigGAN blocks and bottleneck attention, small enough for tests."""
    from configs.ve import colin27_ncsnpp_small

    config = colin27_ncsnpp_small.get_config()
    config.data.image_size = size
    config.model.nf = 8
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    return config


@pytest.fixture(scope="module")
def model_and_input():
    """A seeded tiny model (float64 for a tight comparison) and a batch of 3 inputs at several noise levels."""
    g = torch.Generator().manual_seed(0)
    model = mutils.create_model(tiny_config())
    with torch.no_grad():
        for name, p in model.named_parameters():  # init_scale 0 zeroes layers: re-randomise every path
            if name.endswith(".W"):
                continue  # Fourier frequencies keep their construction
            offset = 1.0 if "GroupNorm" in name and name.endswith("weight") else 0.0
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + offset)
    model = model.double()
    x = torch.rand(3, 1, 16, 16, generator=g, dtype=torch.float64)  # [B, 1, H, W]
    sigma = torch.tensor([0.05, 1.0, 50.0], dtype=torch.float64)
    return model, x, sigma


def test_configure_cpu_allocator_is_idempotent_and_harmless():
    first = perf.configure_cpu_allocator()
    second = perf.configure_cpu_allocator()
    assert first == second
    if platform.libc_ver()[0] == "glibc":
        assert first is True
        state = perf.allocator_state()
        assert state["configured"] and state["mmap_max"] == 0 and state["trim_threshold"] >= 2 ** 30
    # Large allocations still work and hold what was written (64 MiB > the default mmap threshold).
    a = torch.full((16, 1024, 1024), 3.0)
    b = a * 2
    assert float(b.sum()) == 6.0 * a.numel()
    del a, b
    c = torch.empty(16, 1024, 1024).fill_(1.0)
    assert float(c.mean()) == 1.0


def test_configure_cpu_allocator_clamps_to_c_int():
    assert perf.configure_cpu_allocator(trim_threshold=1 << 40, top_pad=1 << 40) in (True, False)
    if perf.allocator_state()["configured"]:
        assert perf.allocator_state()["trim_threshold"] == 2 ** 31 - 1
    perf.configure_cpu_allocator()  # back to the defaults


def test_prepare_model_for_inference_keeps_outputs(model_and_input):
    model, x, sigma = model_and_input
    plain = copy.deepcopy(model).eval()
    with torch.no_grad():
        ref = plain(x, sigma)
    prepared = perf.prepare_model_for_inference(copy.deepcopy(model).train(), "cpu", channels_last=False)
    assert not prepared.training
    assert all(not p.requires_grad for p in prepared.parameters())
    with perf.inference():
        out = prepared(x, sigma)
    assert torch.is_inference(out)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_channels_last_output_equals_contiguous(model_and_input):
    model, x, sigma = model_and_input
    with torch.no_grad():
        ref = copy.deepcopy(model).eval()(x, sigma)
    cl = perf.prepare_model_for_inference(copy.deepcopy(model), channels_last=True)
    conv = next(m for m in cl.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with perf.inference():
        out_nchw = cl(x, sigma)
        out_nhwc = cl(x.contiguous(memory_format=torch.channels_last), sigma)
    torch.testing.assert_close(out_nchw, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_nhwc, ref, rtol=1e-10, atol=1e-12)


def test_channels_last_is_the_cpu_default(model_and_input):
    model, _, _ = model_and_input
    prepared = perf.prepare_model_for_inference(copy.deepcopy(model), "cpu")
    convs = [m for m in prepared.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    plain = perf.prepare_model_for_inference(copy.deepcopy(model), "cpu", channels_last=False)
    assert not any(m.weight.is_contiguous(memory_format=torch.channels_last) for m in plain.modules()
                   if isinstance(m, torch.nn.Conv2d) and m.weight.shape[1] > 1 and m.weight.shape[2] > 1)


def test_channels_last_float32_close(model_and_input):
    model, x, sigma = model_and_input
    m32 = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        ref = m32(x.float(), sigma.float())
    cl = perf.prepare_model_for_inference(copy.deepcopy(m32), channels_last=True)
    with perf.inference():
        out = cl(x.float(), sigma.float())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_fir_fast_path_matches_reference_in_model(model_and_input):
    upfirdn = importlib.import_module("op.upfirdn2d")
    model, x, sigma = model_and_input
    model = copy.deepcopy(model).eval()
    saved = upfirdn.FAST_PATH
    try:
        with torch.no_grad():
            upfirdn.FAST_PATH = False
            ref = model(x, sigma)
            upfirdn.FAST_PATH = True
            out = model(x, sigma)
    finally:
        upfirdn.FAST_PATH = saved
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)


def test_inference_context_disables_autograd():
    w = torch.ones(3, requires_grad=True)
    with perf.inference():
        y = w * 2
    assert not y.requires_grad and torch.is_inference(y)


def test_timed_call_record_and_fraction():
    calls = []
    rec = common.timed_call(lambda: calls.append(torch.mm(torch.ones(64, 64), torch.ones(64, 64))),
                            torch.device("cpu"), flops=2 * 64 ** 3, gemm=False)
    assert len(calls) == 1
    assert rec["time_s"] > 0 and rec["user_s"] >= 0 and rec["flops"] == 2 * 64 ** 3
    assert "fraction_of_gemm" not in rec  # no GEMM reference asked for
    summary = common.summarize([dict(rec, fraction_of_gemm=0.5), dict(rec, fraction_of_gemm=0.7)])
    assert summary["runs"] == 2 and summary["median_fraction_of_gemm"] == pytest.approx(0.6)


def test_count_flops_conv():
    x = torch.zeros(2, 4, 8, 8)
    w = torch.zeros(6, 4, 3, 3)
    total, by_op = common.count_flops(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    assert total == 2 * (2 * 6 * 8 * 8) * (4 * 3 * 3)  # 2 FLOPs per multiply-accumulate
    assert "aten.convolution" in by_op
