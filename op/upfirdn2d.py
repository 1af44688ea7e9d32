"""Upsample, FIR-filter, downsample (``upfirdn2d``) as in StyleGAN2, used by NCSN++'s FIR resampling.

``upfirdn2d(x, k, up, down, pad)`` inserts ``up - 1`` zeros after every sample, pads (negative pads
crop), convolves with the 2-D FIR kernel ``k`` (true convolution, i.e. correlation with the flipped
kernel) and keeps every ``down``-th sample. The same ``up``/``down``/``pad`` apply to both image axes.

The pure-PyTorch path is exact in float32 and float64 and is what runs on the CPU. It is computed as
one depthwise convolution (``upfirdn2d_conv``): a strided ``conv2d`` for up = 1 (the symmetric padding
folded into the convolution) and a strided ``conv_transpose2d`` for down = 1 (the zero insertion is the
transposed convolution's stride), 2-5x faster than the reference ``upfirdn2d_native`` (explicit zero
insertion, pad and crop) that it falls back to in the other cases; ``FAST_PATH = False`` forces the
reference. A CUDA kernel (``upfirdn2d.cpp`` + ``upfirdn2d_kernel.cu``) is compiled lazily, the first time a
CUDA tensor is passed, and only then; ``op._jit`` decides (``SCORE_MRI_CUDA_OPS``) whether it is used,
after a parity check against the pure-PyTorch path (:func:`parity_check`), or whether the pure path runs.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch.autograd import Function

from op import _jit

EXTENSION = "score_mri_upfirdn2d"

# The compiled extension once op._jit has accepted it (None before, on CPU, and after a fallback).
_cuda_module = None


def _load_cuda():
    """The compiled extension if op._jit chooses the CUDA path (building it on first use), else None."""
    global _cuda_module
    _cuda_module = _jit.load(EXTENSION)
    return _cuda_module


def _out_size(in_size: int, up: int, down: int, pad0: int, pad1: int, k: int) -> int:
    """Output length of one axis: floor((in*up + pad0 + pad1 - k) / down) + 1."""
    return (in_size * up + pad0 + pad1 - k) // down + 1


def upfirdn2d_native(x: torch.Tensor, kernel: torch.Tensor, up_x: int, up_y: int,
                     down_x: int, down_y: int, pad_x0: int, pad_x1: int,
                     pad_y0: int, pad_y1: int) -> torch.Tensor:
    """Reference upfirdn2d in plain PyTorch ops (differentiable, any floating dtype)."""
    B, C, H, W = x.shape  # [B, C, H, W]
    kh, kw = kernel.shape
    kernel = kernel.to(dtype=x.dtype, device=x.device)

    # Zero insertion: x lands on rows/cols 0, up, 2*up, ...; the upsampled size is H*up (W*up).
    if up_x > 1 or up_y > 1:
        u = x.new_zeros(B, C, H * up_y, W * up_x)
        u[:, :, ::up_y, ::up_x] = x
    else:
        u = x

    # Pad (positive) and crop (negative) each border.
    u = F.pad(u, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    u = u[:, :,
          max(-pad_y0, 0):u.shape[2] - max(-pad_y1, 0),
          max(-pad_x0, 0):u.shape[3] - max(-pad_x1, 0)]

    # FIR filter = convolution with k (cross-correlation with the flipped kernel), one channel at a
    # time (depthwise), sampled every `down` pixels.
    w = torch.flip(kernel, [0, 1]).reshape(1, 1, kh, kw).expand(C, 1, kh, kw)
    out = F.conv2d(u, w, stride=(down_y, down_x), groups=C)
    assert out.shape[2:] == (_out_size(H, up_y, down_y, pad_y0, pad_y1, kh),
                             _out_size(W, up_x, down_x, pad_x0, pad_x1, kw))
    return out


# Set to False to run the reference path (benchmarks compare the two).
FAST_PATH = True


def _depthwise_weight(kernel: torch.Tensor, channels: int, flip: bool) -> torch.Tensor:
    """[kh, kw] FIR kernel -> [C, 1, kh, kw] depthwise weight (flipped for a true convolution)."""
    k = torch.flip(kernel, [0, 1]) if flip else kernel
    return k.reshape(1, 1, *k.shape).expand(channels, 1, *k.shape).contiguous()


def upfirdn2d_conv(x: torch.Tensor, kernel: torch.Tensor, up_x: int, up_y: int,
                   down_x: int, down_y: int, pad_x0: int, pad_x1: int,
                   pad_y0: int, pad_y1: int) -> torch.Tensor | None:
    """upfirdn2d as one depthwise (transposed) convolution; None when the case is not covered.

    up = 1: pad (or crop), then conv2d with stride ``down`` and the flipped kernel; symmetric
    non-negative pads go into the convolution's own padding (no padded copy).
    down = 1, up > 1: with u the zero-inserted signal padded by p0 on the left,
    out[o] = sum_i x[i] k[K-1-p0+o-i*up], which is conv_transpose2d(x, k, stride=up, padding=K-1-p0,
    output_padding=up+p1-p0-1); covered when that padding is >= 0 and 0 <= output_padding < up.
    """
    B, C, H, W = x.shape  # [B, C, H, W]
    kh, kw = kernel.shape
    kernel = kernel.to(dtype=x.dtype, device=x.device)
    if up_x == 1 and up_y == 1:
        pads = (pad_x0, pad_x1, pad_y0, pad_y1)
        if pad_x0 == pad_x1 >= 0 and pad_y0 == pad_y1 >= 0:
            return F.conv2d(x, _depthwise_weight(kernel, C, True), stride=(down_y, down_x),
                            padding=(pad_y0, pad_x0), groups=C)
        u = F.pad(x, [max(p, 0) for p in pads])
        u = u[:, :, max(-pad_y0, 0):u.shape[2] - max(-pad_y1, 0),
              max(-pad_x0, 0):u.shape[3] - max(-pad_x1, 0)]
        return F.conv2d(u, _depthwise_weight(kernel, C, True), stride=(down_y, down_x), groups=C)
    if down_x == 1 and down_y == 1:
        P = (kh - 1 - pad_y0, kw - 1 - pad_x0)
        OP = (up_y + pad_y1 - pad_y0 - 1, up_x + pad_x1 - pad_x0 - 1)
        if min(P) >= 0 and 0 <= OP[0] < up_y and 0 <= OP[1] < up_x:
            return _transposed_depthwise(x, _depthwise_weight(kernel, C, False), (up_y, up_x), P, OP)
    return None


def _transposed_depthwise(x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                          padding: tuple[int, int], output_padding: tuple[int, int]) -> torch.Tensor:
    """Depthwise ``conv_transpose2d``; on the CPU always in float32, even under bf16 autocast.

    oneDNN's bf16 depthwise transposed convolution is 11-21x slower than its float32 one on a 2-core AVX512-BF16
    CPU (64 channels, 80x80 -> 160x160: 6.3 ms against 0.3 ms; ``benchmarks/fir_upsample_speed.py``), which made
    the FIR upsampling ~17 % of a bf16 NCSN++ forward; a fixed FIR filter gains nothing from bf16. A bf16 input
    comes back in bf16 (rounded once, as the bf16 call rounds its float32 accumulator).
    """
    low_precision = x.dtype in (torch.bfloat16, torch.float16) or torch.is_autocast_enabled("cpu")
    if x.device.type != "cpu" or not low_precision:
        return F.conv_transpose2d(x, weight, stride=stride, padding=padding, output_padding=output_padding,
                                  groups=x.shape[1])
    with torch.autocast("cpu", enabled=False):
        out = F.conv_transpose2d(x.float(), weight.float(), stride=stride, padding=padding,
                                 output_padding=output_padding, groups=x.shape[1])
    return out.to(x.dtype)


class _UpFirDn2dFn(Function):
    """Autograd wrapper around the CUDA kernel; the gradient is again an upfirdn2d (with the flipped
    kernel, up and down swapped), so higher-order gradients work by recursion."""

    @staticmethod
    def forward(ctx, x, kernel, up, down, pad, impl):
        up_x, up_y = up
        down_x, down_y = down
        pad_x0, pad_x1, pad_y0, pad_y1 = pad
        kh, kw = kernel.shape
        B, C, H, W = x.shape
        out_h = _out_size(H, up_y, down_y, pad_y0, pad_y1, kh)
        out_w = _out_size(W, up_x, down_x, pad_x0, pad_x1, kw)
        # Gradient padding: the transposed operation maps the output grid back onto the input grid.
        g_pad = (kw - pad_x0 - 1, W * up_x - out_w * down_x + pad_x0 - up_x + 1,
                 kh - pad_y0 - 1, H * up_y - out_h * down_y + pad_y0 - up_y + 1)
        ctx.save_for_backward(kernel)
        ctx.cfg = (up, down, g_pad, impl)
        return impl(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)

    @staticmethod
    def backward(ctx, grad_out):
        (kernel,) = ctx.saved_tensors
        up, down, g_pad, impl = ctx.cfg
        grad_in = _UpFirDn2dFn.apply(grad_out, torch.flip(kernel, [0, 1]), down, up, g_pad, impl)
        return grad_in, None, None, None, None, None


def _compiled_impl(ext: Any):
    """``impl`` for :class:`_UpFirDn2dFn` that calls extension ``ext`` on a contiguous [B, C, H, W] tensor."""

    def impl(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        kernel = kernel.to(dtype=x.dtype, device=x.device).contiguous()
        return ext.upfirdn2d(x.contiguous(), kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)

    return impl


def upfirdn2d_compiled(ext: Any, x: torch.Tensor, kernel: torch.Tensor, up: int, down: int,
                       pad: tuple[int, int, int, int]) -> torch.Tensor:
    """upfirdn2d through compiled extension ``ext`` (differentiable to any order)."""
    return _UpFirDn2dFn.apply(x, kernel, (up, up), (down, down), pad, _compiled_impl(ext))


def upfirdn2d_pytorch(x: torch.Tensor, kernel: torch.Tensor, up: int, down: int,
                      pad: tuple[int, int, int, int]) -> torch.Tensor:
    """The pure-PyTorch path: one depthwise (transposed) convolution when covered, else the reference."""
    px0, px1, py0, py1 = pad
    if FAST_PATH:
        out = upfirdn2d_conv(x, kernel, up, up, down, down, px0, px1, py0, py1)
        if out is not None:
            return out
    return upfirdn2d_native(x, kernel, up, up, down, down, px0, px1, py0, py1)


# Parity-check cases (up, down, pad (x0, x1, y0, y1), kernel shape): NCSN++'s FIR up- and downsampling
# with [1, 3, 3, 1], then non-square kernels, uneven factors and cropping (negative) pads.
PARITY_CASES = ((2, 1, (2, 1, 2, 1), (4, 4)), (1, 2, (1, 1, 1, 1), (4, 4)), (3, 2, (1, 2, 0, 3), (3, 5)),
                (2, 2, (-1, 2, 1, -2), (4, 3)), (1, 1, (1, 1, 1, 1), (3, 3)))


def parity_check(ext: Any, device: torch.device) -> list[dict]:
    """Compiled ``ext`` (None: pure path only) against the pure-PyTorch path, forward and backward, per
    case of PARITY_CASES and dtype of op._jit.CHECK_DTYPES, on [2, 3, 9, 7] random inputs."""
    g = torch.Generator().manual_seed(0)
    records = []
    for dtype in _jit.CHECK_DTYPES:
        for up, down, pad, kshape in PARITY_CASES:
            x = torch.randn(2, 3, 9, 7, generator=g)
            k = torch.randn(*kshape, generator=g)
            compiled = None if ext is None else (
                lambda x, k, up=up, down=down, pad=pad: upfirdn2d_compiled(ext, x, k, up, down, pad))
            rec = _jit.compare(compiled, lambda x, k, up=up, down=down, pad=pad: upfirdn2d_pytorch(x, k, up, down, pad),
                               [x, k], [True, False], dtype, device, g)
            records.append(dict(op="upfirdn2d", case=f"up={up} down={down} pad={pad} k={kshape[0]}x{kshape[1]}",
                                **rec))
    return records


_jit.register(EXTENSION, ("upfirdn2d.cpp", "upfirdn2d_kernel.cu"), "op.upfirdn2d", parity_check)


def _normalize_pad(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """(p0, p1) -> same pad on both axes; (x0, x1, y0, y1) passes through."""
    if len(pad) == 2:
        return int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])
    if len(pad) == 4:
        return tuple(int(p) for p in pad)  # type: ignore[return-value]
    raise ValueError(f"pad must have 2 or 4 entries, got {len(pad)}")


def upfirdn2d(input: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: Sequence[int] = (0, 0)) -> torch.Tensor:
    """Upsample by ``up`` (zero insertion), pad, FIR-filter with ``kernel``, downsample by ``down``.

    input: [B, C, H, W]; kernel: [kh, kw]; pad: (p0, p1) for both axes or (x0, x1, y0, y1).
    """
    if input.ndim != 4:
        raise ValueError(f"upfirdn2d expects a [B, C, H, W] tensor, got shape {tuple(input.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"upfirdn2d expects a 2-D kernel, got shape {tuple(kernel.shape)}")
    up, down = int(up), int(down)
    if up < 1 or down < 1:
        raise ValueError("up and down must be >= 1")
    pad4 = _normalize_pad(pad)
    if _jit.on_cuda(input):
        ext = _load_cuda()
        if ext is not None:
            return upfirdn2d_compiled(ext, input, kernel, up, down, pad4)
    return upfirdn2d_pytorch(input, kernel, up, down, pad4)
