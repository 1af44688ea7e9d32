"""Fused bias + leaky ReLU + scale (StyleGAN2's ``fused_leaky_relu``).

out = leaky_relu(x + bias, negative_slope) * scale, with ``bias`` broadcast along dim 1. Pure PyTorch
on the CPU; on CUDA tensors a small kernel (``fused_bias_act.cpp`` + ``fused_bias_act_kernel.cu``) is
compiled lazily on first use; ``op._jit`` decides (``SCORE_MRI_CUDA_OPS``) whether it is used, after a
parity check against the pure-PyTorch path (:func:`parity_check`), or whether the pure path runs.
NCSN++ itself does not use this op; it is kept for API compatibility with the original ``op`` package.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from op import _jit

EXTENSION = "score_mri_fused_bias_act"

# The compiled extension once op._jit has accepted it (None before, on CPU, and after a fallback).
_cuda_module = None


def _load_cuda():
    """The compiled extension if op._jit chooses the CUDA path (building it on first use), else None."""
    global _cuda_module
    _cuda_module = _jit.load(EXTENSION)
    return _cuda_module


def fused_leaky_relu_native(x: torch.Tensor, bias: torch.Tensor | None,
                            negative_slope: float = 0.2, scale: float = 2 ** 0.5) -> torch.Tensor:
    """Reference implementation: leaky_relu(x + bias[None, :, None, ...], slope) * scale."""
    if bias is not None:
        x = x + bias.reshape(1, bias.shape[0], *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


def _reduce_bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """Sum a [B, C, ...] gradient over every dim except the channel dim."""
    dims = [0] + list(range(2, grad.ndim))
    return grad.sum(dims)


class _FusedLeakyReLUGrad(Function):
    """d out / d x given the forward output (the kernel's 'grad' mode); itself differentiable."""

    @staticmethod
    def forward(ctx, grad_out, out, negative_slope, scale, ext):
        ctx.save_for_backward(out)
        ctx.cfg = (negative_slope, scale, ext)
        return ext.fused_bias_act_grad(grad_out.contiguous(), out.contiguous(), negative_slope, scale)

    @staticmethod
    def backward(ctx, gradgrad):
        (out,) = ctx.saved_tensors
        negative_slope, scale, ext = ctx.cfg
        # The map grad_out -> grad_in is linear with the same slope pattern.
        return _FusedLeakyReLUGrad.apply(gradgrad, out, negative_slope, scale, ext), None, None, None, None


class _FusedLeakyReLU(Function):
    """Compiled forward; the backward reuses the saved output to pick the slope."""

    @staticmethod
    def forward(ctx, x, bias, negative_slope, scale, ext):
        x = x.contiguous()
        b = bias.to(x.dtype).contiguous() if bias is not None else x.new_empty(0)
        out = ext.fused_bias_act(x, b, negative_slope, scale)
        ctx.save_for_backward(out)
        ctx.cfg = (negative_slope, scale, bias is not None, ext)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        negative_slope, scale, has_bias, ext = ctx.cfg
        grad_in = _FusedLeakyReLUGrad.apply(grad_out, out, negative_slope, scale, ext)
        grad_bias = _reduce_bias_grad(grad_in) if has_bias else None
        return grad_in, grad_bias, None, None, None


def fused_leaky_relu_compiled(ext: Any, x: torch.Tensor, bias: torch.Tensor | None,
                              negative_slope: float = 0.2, scale: float = 2 ** 0.5) -> torch.Tensor:
    """fused_leaky_relu through compiled extension ``ext`` (differentiable to any order in x)."""
    return _FusedLeakyReLU.apply(x, bias, float(negative_slope), float(scale), ext)


def parity_check(ext: Any, device: torch.device) -> list[dict]:
    """Compiled ``ext`` (None: pure path only) against the pure-PyTorch path, forward and backward (x and
    bias), with and without bias, per dtype of op._jit.CHECK_DTYPES, on [2, 5, 4, 3] random inputs."""
    g = torch.Generator().manual_seed(1)
    records = []
    for dtype in _jit.CHECK_DTYPES:
        for slope, scale in ((0.2, 2 ** 0.5), (0.05, 1.5)):
            x = torch.randn(2, 5, 4, 3, generator=g)
            b = torch.randn(5, generator=g)
            cases = {"bias": ([x, b], [True, True], lambda x, b: (x, b)), "no bias": ([x], [True], lambda x: (x, None))}
            for name, (inputs, grad, unpack) in cases.items():
                compiled = None if ext is None else (
                    lambda *t, s=slope, c=scale, u=unpack: fused_leaky_relu_compiled(ext, *u(*t), s, c))
                native = lambda *t, s=slope, c=scale, u=unpack: fused_leaky_relu_native(*u(*t), s, c)  # noqa: E731
                rec = _jit.compare(compiled, native, inputs, grad, dtype, device, g)
                records.append(dict(op="fused_leaky_relu", case=f"{name}, slope={slope} scale={scale:.3g}", **rec))
    return records


_jit.register(EXTENSION, ("fused_bias_act.cpp", "fused_bias_act_kernel.cu"), "op.fused_leaky_relu", parity_check)


def fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor | None = None,
                     negative_slope: float = 0.2, scale: float = 2 ** 0.5) -> torch.Tensor:
    """leaky_relu(input + bias, negative_slope) * scale, bias broadcast along dim 1."""
    if bias is not None and (bias.ndim != 1 or input.ndim < 2 or bias.shape[0] != input.shape[1]):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match input channels "
                         f"{tuple(input.shape)}")
    if _jit.on_cuda(input):
        ext = _load_cuda()
        if ext is not None:
            return fused_leaky_relu_compiled(ext, input, bias, negative_slope, scale)
    return fused_leaky_relu_native(input, bias, negative_slope, scale)


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by a scaled leaky ReLU."""

    def __init__(self, channel: int, negative_slope: float = 0.2, scale: float = 2 ** 0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)
