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
CUDA tensor is passed, and only then; if it cannot be built a warning is issued once and the native
path is used instead.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch.autograd import Function

from op._jit import CUDA_DTYPES as _CUDA_DTYPES, build_extension

# Compiled extension (None until a CUDA tensor is seen and the build succeeds).
_cuda_module = None
_cuda_failed = False


def _load_cuda():
    """Build/load the CUDA extension on first use; return it, or None if unavailable."""
    global _cuda_module, _cuda_failed
    if _cuda_module is None and not _cuda_failed:
        _cuda_module = build_extension("score_mri_upfirdn2d", ["upfirdn2d.cpp", "upfirdn2d_kernel.cu"],
                                       "op.upfirdn2d")
        _cuda_failed = _cuda_module is None
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
            return F.conv_transpose2d(x, _depthwise_weight(kernel, C, False), stride=(up_y, up_x),
                                      padding=P, output_padding=OP, groups=C)
    return None


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


def _cuda_impl(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    """Call the compiled kernel on a contiguous [B, C, H, W] tensor."""
    kernel = kernel.to(dtype=x.dtype, device=x.device).contiguous()
    return _cuda_module.upfirdn2d(x.contiguous(), kernel, up_x, up_y, down_x, down_y,
                                  pad_x0, pad_x1, pad_y0, pad_y1)


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
    px0, px1, py0, py1 = _normalize_pad(pad)
    if input.is_cuda and input.dtype in _CUDA_DTYPES and _load_cuda() is not None:
        return _UpFirDn2dFn.apply(input, kernel, (up, up), (down, down),
                                    (px0, px1, py0, py1), _cuda_impl)
    if FAST_PATH:
        out = upfirdn2d_conv(input, kernel, up, up, down, down, px0, px1, py0, py1)
        if out is not None:
            return out
    return upfirdn2d_native(input, kernel, up, up, down, down, px0, px1, py0, py1)
