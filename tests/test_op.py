"""op/: upfirdn2d and fused_leaky_relu against explicit reference formulas, lazy CUDA build, GPU parity.

The CPU-side tests of the build / self-check / fallback decision are in test_op_fallback.py.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from op import fused_leaky_relu, upfirdn2d

REPO = Path(__file__).resolve().parents[1]
upfirdn2d_mod = importlib.import_module("op.upfirdn2d")
fused_act_mod = importlib.import_module("op.fused_act")
from models import up_or_down_sampling as uds  # noqa: E402

K1331 = np.array([1.0, 3.0, 3.0, 1.0])


def _reference_upfirdn2d(x: np.ndarray, k: np.ndarray, up: int, down: int,
                         pad: tuple[int, int, int, int]) -> np.ndarray:
    """Textbook definition: zero-insert, pad/crop, full 2-D convolution ('valid'), decimate."""
    px0, px1, py0, py1 = pad
    B, C, H, W = x.shape
    u = np.zeros((B, C, H * up, W * up), dtype=np.float64)
    u[:, :, ::up, ::up] = x
    u = np.pad(u, ((0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))))
    u = u[:, :, max(-py0, 0):u.shape[2] - max(-py1, 0), max(-px0, 0):u.shape[3] - max(-px1, 0)]
    out = np.stack([np.stack([scipy.signal.convolve2d(u[b, c], k, mode="valid")
                              for c in range(C)]) for b in range(B)])
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad,kshape", [
    (1, 1, (0, 0, 0, 0), (3, 3)),
    (2, 1, (2, 1, 2, 1), (4, 4)),
    (1, 2, (1, 1, 1, 1), (4, 4)),
    (3, 2, (1, 2, 0, 3), (3, 5)),      # non-square, asymmetric kernel and pads
    (2, 2, (-1, 2, 1, -2), (4, 3)),    # negative pads crop
])
def test_upfirdn2d_native_matches_definition_f64(up, down, pad, kshape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    k = torch.randn(*kshape, generator=g, dtype=torch.float64)
    out = upfirdn2d_mod.upfirdn2d_native(x, k, up, up, down, down, *pad)
    ref = _reference_upfirdn2d(x.numpy(), k.numpy(), up, down, pad)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down,pad", [
    (1, 1, (1, 1)), (1, 2, (1, 1)), (1, 2, (2, 1)), (2, 1, (2, 1)), (2, 1, (1, 1)),
    (2, 1, (3, 0)), (4, 1, (2, 1)), (2, 2, (1, 1)), (1, 1, (-1, 0)), (1, 2, (1, 2, 0, 1))])
def test_upfirdn2d_public_matches_definition(up, down, pad):
    """The public entry point (whichever CPU path it dispatches to) equals the definition."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 8, 7, generator=g, dtype=torch.float64)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)
    pad4 = pad if len(pad) == 4 else (pad[0], pad[1], pad[0], pad[1])
    ref = _reference_upfirdn2d(x.numpy(), k.numpy(), up, down, pad4)
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    out32 = upfirdn2d(x.float(), k.float(), up=up, down=down, pad=pad)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_upsample_fir_equals_transposed_convolution():
    """upsample_2d with [1,3,3,1] == conv_transpose2d(x, 4*k/sum, stride 2) cropped by one pixel."""
    g = torch.Generator().manual_seed(1)
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64).to(dtype)
        k = torch.as_tensor(np.outer(K1331, K1331) / 64.0 * 4.0, dtype=dtype)
        ref = F.conv_transpose2d(x.reshape(6, 1, 8, 8), k[None, None], stride=2)[:, :, 1:17, 1:17]
        out = uds.upsample_2d(x, K1331.tolist(), factor=2)
        assert out.dtype == dtype and out.shape == (2, 3, 16, 16)
        torch.testing.assert_close(out, ref.reshape(2, 3, 16, 16), rtol=tol, atol=tol)


def test_fir_upsampling_under_cpu_bf16_autocast_is_float32_arithmetic():
    """Under CPU bf16 autocast the FIR upsampling runs in float32: a float32 input gives the float32 result
    exactly, a bf16 input gets that result rounded once to bf16 (the dtype is kept in both cases)."""
    g = torch.Generator().manual_seed(3)
    x32 = torch.randn(1, 4, 6, 6, generator=g)
    ref32 = uds.upsample_2d(x32, K1331.tolist(), factor=2)                       # plain float32
    xbf = x32.to(torch.bfloat16)
    refbf = uds.upsample_2d(xbf.float(), K1331.tolist(), factor=2).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = uds.upsample_2d(x32, K1331.tolist(), factor=2)
        outbf = uds.upsample_2d(xbf, K1331.tolist(), factor=2)
    assert out32.dtype == torch.float32 and outbf.dtype == torch.bfloat16
    assert torch.equal(out32, ref32) and torch.equal(outbf, refbf)


def test_downsample_fir_equals_strided_convolution():
    """downsample_2d with [1,3,3,1] == conv2d(pad(x, 1), k/sum, stride 2); constants are preserved."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 10, 10, generator=g, dtype=torch.float64)
    k = torch.as_tensor(np.outer(K1331, K1331) / 64.0)
    ref = F.conv2d(F.pad(x.reshape(2, 1, 10, 10), (1, 1, 1, 1)), k[None, None], stride=2)
    out = uds.downsample_2d(x, K1331.tolist(), factor=2)
    torch.testing.assert_close(out, ref.reshape(1, 2, 5, 5), rtol=1e-13, atol=1e-13)
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    interior = uds.downsample_2d(ones, K1331.tolist())[..., 1:-1, 1:-1]
    torch.testing.assert_close(interior, torch.ones_like(interior))


def test_fir_kernel_follows_input_dtype():
    """Fix: the FIR kernel is cast to the input dtype, so float64 models work (original: float32)."""
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    assert uds.upsample_2d(x, [1, 3, 3, 1]).dtype == torch.float64
    assert uds.downsample_2d(x, [1, 3, 3, 1]).dtype == torch.float64
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    assert uds.conv_downsample_2d(x, w, k=[1, 3, 3, 1]).shape == (1, 2, 4, 4)
    assert uds.upsample_conv_2d(x, w, k=[1, 3, 3, 1]).shape == (1, 2, 16, 16)


def test_upfirdn2d_rejects_bad_arguments():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError):
        upfirdn2d(x[0], torch.ones(2, 2))
    with pytest.raises(ValueError):
        upfirdn2d(x, torch.ones(4))
    with pytest.raises(ValueError):
        upfirdn2d(x, torch.ones(2, 2), up=0)


def _native_impl(x, k, *args):
    return upfirdn2d_mod.upfirdn2d_native(x, k, *args)


@pytest.mark.parametrize("up,down,pad", [(2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)),
                                         (2, 2, (1, 2, 0, 1))])
def test_explicit_backward_matches_autograd(up, down, pad):
    """The analytic gradient used with the CUDA kernel (flipped kernel, up/down swapped, g_pad) is
    checked here with the native forward, against autograd of the native op."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, 4, generator=g, dtype=torch.float64)
    y_ref = upfirdn2d_mod.upfirdn2d_native(x, k, up, up, down, down, *pad)
    y = upfirdn2d_mod._UpFirDn2dFn.apply(x, k, (up, up), (down, down), pad, _native_impl)
    torch.testing.assert_close(y, y_ref)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (gx_ref,) = torch.autograd.grad(y_ref, x, gy)
    (gx,) = torch.autograd.grad(y, x, gy, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradgradcheck(
        lambda t: upfirdn2d_mod._UpFirDn2dFn.apply(t, k, (up, up), (down, down), pad, _native_impl),
        (x.detach()[:1, :1].clone().requires_grad_(),))


def test_fused_leaky_relu_native():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    v = x + b[None, :, None, None]
    for slope, scale in ((0.2, 2 ** 0.5), (0.05, 1.0)):
        ref = torch.where(v > 0, v, slope * v) * scale
        torch.testing.assert_close(fused_leaky_relu(x, b, slope, scale), ref, rtol=0, atol=0)
    layer = fused_act_mod.FusedLeakyReLU(3)
    assert layer(torch.ones(1, 3, 2, 2)).shape == (1, 3, 2, 2)
    with pytest.raises(ValueError):
        fused_leaky_relu(x, torch.zeros(4, dtype=torch.float64))


def test_import_does_not_build_or_load_extensions():
    """Importing op/models never compiles: no cpp_extension import, no extension module loaded."""
    code = textwrap.dedent("""
        import sys, importlib
        import op, models
        up = importlib.import_module("op.upfirdn2d")
        fa = importlib.import_module("op.fused_act")
        assert up._cuda_module is None and fa._cuda_module is None
        assert "torch.utils.cpp_extension" not in sys.modules, "cpp_extension imported eagerly"
        import torch
        x = torch.randn(1, 1, 8, 8)
        op.upfirdn2d(x, torch.ones(2, 2) / 4, down=2)
        assert up._cuda_module is None and "torch.utils.cpp_extension" not in sys.modules
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# CUDA parity (GPU machines only)
# --------------------------------------------------------------------------------------------------

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="CUDA not available: the compiled kernels are checked against the native path only on "
           "a machine with a GPU")


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("up,down,pad,kshape", [
    (2, 1, (2, 1, 2, 1), (4, 4)), (1, 2, (1, 1, 1, 1), (4, 4)), (3, 2, (1, 2, 0, 3), (3, 5)),
    (2, 2, (-1, 2, 1, -2), (4, 3)), (1, 1, (1, 1, 1, 1), (3, 3))])
def test_upfirdn2d_cuda_matches_native(dtype, tol, up, down, pad, kshape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed build must fail this test, not fall back
        assert upfirdn2d_mod._load_cuda() is not None, "CUDA extension did not build"
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 9, 7, generator=g, dtype=dtype)
    k = torch.randn(*kshape, generator=g, dtype=dtype)
    xc = x.cuda().requires_grad_()
    out = upfirdn2d(xc, k.cuda(), up=up, down=down, pad=pad)
    ref_x = x.clone().requires_grad_()
    ref = upfirdn2d_mod.upfirdn2d_native(ref_x, k, up, up, down, down, *pad)
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=tol, atol=tol)
    gy = torch.randn(ref.shape, generator=g, dtype=dtype)
    (gx,) = torch.autograd.grad(out, xc, gy.cuda())
    (gx_ref,) = torch.autograd.grad(ref, ref_x, gy)
    torch.testing.assert_close(gx.cpu(), gx_ref, rtol=tol, atol=tol)


@requires_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-14)])
def test_fused_leaky_relu_cuda_matches_native(dtype, tol):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused_act_mod._load_cuda() is not None, "CUDA extension did not build"
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 4, 3, generator=g, dtype=dtype)
    b = torch.randn(5, generator=g, dtype=dtype)
    xc, bc = x.cuda().requires_grad_(), b.cuda().requires_grad_()
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    out = fused_leaky_relu(xc, bc, 0.1, 1.5)
    ref = fused_act_mod.fused_leaky_relu_native(xr, br, 0.1, 1.5)
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=tol, atol=tol)
    gy = torch.randn(ref.shape, generator=g, dtype=dtype)
    gx, gb = torch.autograd.grad(out, (xc, bc), gy.cuda())
    gx_ref, gb_ref = torch.autograd.grad(ref, (xr, br), gy)
    torch.testing.assert_close(gx.cpu(), gx_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(gb.cpu(), gb_ref, rtol=tol, atol=tol)


@requires_cuda
def test_self_check_accepts_the_kernels_on_this_gpu(monkeypatch):
    """In the default (auto) mode both extensions build and pass their fp32/bf16 parity check here."""
    from op import _jit

    monkeypatch.delenv(_jit.ENV_VAR, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert upfirdn2d_mod._load_cuda() is not None and fused_act_mod._load_cuda() is not None
    for label, st in _jit.status().items():
        assert st["built"] and not st["fallback"], (label, st["error"])
        assert st["checks"] and all(c["ok"] for c in st["checks"]), label


@requires_cuda
def test_ncsnpp_block_cuda_matches_cpu():
    """A FIR down/up ResNet block gives the same result on the GPU (compiled op) and the CPU."""
    from models import layerspp

    torch.manual_seed(0)
    for kw in ({"down": True}, {"up": True}):
        block = layerspp.ResnetBlockBigGANpp(torch.nn.SiLU(), 8, 16, temb_dim=12, fir=True,
                                             dropout=0.0, **kw).double().eval()
        x = torch.randn(2, 8, 8, 8, dtype=torch.float64)
        temb = torch.randn(2, 12, dtype=torch.float64)
        ref = block(x, temb)
        out = block.cuda()(x.cuda(), temb.cuda()).cpu()
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
