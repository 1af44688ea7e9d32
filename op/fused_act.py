"""Fused bias + leaky ReLU + scale (StyleGAN2's ``fused_leaky_relu``).

out = leaky_relu(x + bias, negative_slope) * scale, with ``bias`` broadcast along dim 1. Pure PyTorch
on the CPU; on CUDA tensors a small kernel (``fused_bias_act.cpp`` + ``fused_bias_act_kernel.cu``) is
compiled lazily on first use, with a one-time warning and the PyTorch path as fallback.
NCSN++ itself does not use this op; it is kept for API compatibility with the original ``op`` package.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from op._jit import CUDA_DTYPES as _CUDA_DTYPES, build_extension

# Compiled extension (None until a CUDA tensor is seen and the build succeeds).
_cuda_module = None
_cuda_failed = False


def _load_cuda():
    """Build/load the CUDA extension on first use; return it, or None if unavailable."""
    global _cuda_module, _cuda_failed
    if _cuda_module is None and not _cuda_failed:
        _cuda_module = build_extension("score_mri_fused_bias_act",
                                       ["fused_bias_act.cpp", "fused_bias_act_kernel.cu"], "op.fused_leaky_relu")
        _cuda_failed = _cuda_module is None
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
    def forward(ctx, grad_out, out, negative_slope, scale):
        ctx.save_for_backward(out)
        ctx.cfg = (negative_slope, scale)
        return _cuda_module.fused_bias_act_grad(grad_out.contiguous(), out, negative_slope, scale)

    @staticmethod
    def backward(ctx, gradgrad):
        (out,) = ctx.saved_tensors
        negative_slope, scale = ctx.cfg
        # The map grad_out -> grad_in is linear with the same slope pattern.
        return _FusedLeakyReLUGrad.apply(gradgrad, out, negative_slope, scale), None, None, None


class _FusedLeakyReLU(Function):
    """CUDA forward; the backward reuses the saved output to pick the slope."""

    @staticmethod
    def forward(ctx, x, bias, negative_slope, scale):
        x = x.contiguous()
        b = bias.to(x.dtype).contiguous() if bias is not None else x.new_empty(0)
        out = _cuda_module.fused_bias_act(x, b, negative_slope, scale)
        ctx.save_for_backward(out)
        ctx.cfg = (negative_slope, scale, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (out,) = ctx.saved_tensors
        negative_slope, scale, has_bias = ctx.cfg
        grad_in = _FusedLeakyReLUGrad.apply(grad_out, out, negative_slope, scale)
        grad_bias = _reduce_bias_grad(grad_in) if has_bias else None
        return grad_in, grad_bias, None, None


def fused_leaky_relu(input: torch.Tensor, bias: torch.Tensor | None = None,
                     negative_slope: float = 0.2, scale: float = 2 ** 0.5) -> torch.Tensor:
    """leaky_relu(input + bias, negative_slope) * scale, bias broadcast along dim 1."""
    if bias is not None and (bias.ndim != 1 or input.ndim < 2 or bias.shape[0] != input.shape[1]):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match input channels "
                         f"{tuple(input.shape)}")
    if input.is_cuda and input.dtype in _CUDA_DTYPES and _load_cuda() is not None:
        return _FusedLeakyReLU.apply(input, bias, float(negative_slope), float(scale))
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
