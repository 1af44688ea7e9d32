"""FIR up/down-sampling layers of NCSN++ (StyleGAN2 resampling, as in score_sde_pytorch).

Fix over the original: the FIR kernel follows the dtype and device of the input at every call, so a
model converted with ``.double()`` runs in float64 (the original builds a float32 kernel and fails).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from op import upfirdn2d


def _setup_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """Normalised 2-D FIR kernel: outer(k, k) for a 1-D k, divided by its sum (float64)."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    k = k / np.sum(k)
    assert k.ndim == 2 and k.shape[0] == k.shape[1]
    return k


@functools.lru_cache(maxsize=64)
def _cached_kernel(k: tuple, scale: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``_setup_kernel(k) * scale`` as a tensor of the given dtype/device (cached, never modified)."""
    return torch.tensor(_setup_kernel(k) * scale, dtype=dtype, device=device)


def _kernel_tensor(k: Sequence[float] | None, factor: int, scale: float,
                   like: torch.Tensor) -> torch.Tensor:
    """FIR kernel with the dtype and device of ``like`` (fix: the original is always float32)."""
    if k is None:
        k = [1] * factor
    k = tuple(map(tuple, np.asarray(k, dtype=np.float64).tolist())) if np.ndim(k) == 2 \
        else tuple(float(v) for v in k)
    return _cached_kernel(k, float(scale), like.dtype, like.device)


def upsample_2d(x: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2,
                gain: float = 1) -> torch.Tensor:
    """Upsample [B, C, H, W] -> [B, C, H*factor, W*factor] with FIR filter ``k`` (gain-normalised)."""
    assert isinstance(factor, int) and factor >= 1
    kt = _kernel_tensor(k, factor, gain * factor ** 2, x)
    p = kt.shape[0] - factor
    return upfirdn2d(x, kt, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: torch.Tensor, k: Sequence[float] | None = None, factor: int = 2,
                  gain: float = 1) -> torch.Tensor:
    """Downsample [B, C, H, W] -> [B, C, H//factor, W//factor] with FIR filter ``k``."""
    assert isinstance(factor, int) and factor >= 1
    kt = _kernel_tensor(k, factor, gain, x)
    p = kt.shape[0] - factor
    return upfirdn2d(x, kt, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | None = None,
                     factor: int = 2, gain: float = 1) -> torch.Tensor:
    """Fused FIR upsampling followed by a 'same' convolution with weight w [out, in, kh, kw]."""
    assert isinstance(factor, int) and factor >= 1
    assert w.ndim == 4
    outC, inC, convH, convW = w.shape
    assert convW == convH
    kt = _kernel_tensor(k, factor, gain * factor ** 2, x)
    p = (kt.shape[0] - factor) - (convW - 1)

    H, W = x.shape[2], x.shape[3]
    out_h, out_w = (H - 1) * factor + convH, (W - 1) * factor + convW
    output_padding = (out_h - (H - 1) * factor - convH, out_w - (W - 1) * factor - convW)
    num_groups = x.shape[1] // inC

    # Transposed-convolution weight: flip spatially and swap in/out channels within each group.
    w = w.reshape(num_groups, -1, inC, convH, convW)
    w = torch.flip(w, [3, 4]).permute(0, 2, 1, 3, 4)
    w = w.reshape(num_groups * inC, -1, convH, convW)

    x = F.conv_transpose2d(x, w, stride=factor, output_padding=output_padding, padding=0)
    return upfirdn2d(x, kt, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: torch.Tensor, w: torch.Tensor, k: Sequence[float] | None = None,
                       factor: int = 2, gain: float = 1) -> torch.Tensor:
    """Fused convolution with weight w followed by FIR downsampling."""
    assert isinstance(factor, int) and factor >= 1
    _outC, _inC, convH, convW = w.shape
    assert convW == convH
    kt = _kernel_tensor(k, factor, gain, x)
    p = (kt.shape[0] - factor) + (convW - 1)
    x = upfirdn2d(x, kt, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor, padding=0)


def naive_upsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H, 1, W, 1).repeat(1, 1, 1, factor, 1, factor)
    return x.reshape(B, C, H * factor, W * factor)


def naive_downsample_2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Average pooling by an integer factor."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // factor, factor, W // factor, factor)
    return x.mean(dim=(3, 5))


class Conv2d(nn.Module):
    """Conv2d with optional fused FIR up- or down-sampling (StyleGAN2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, up: bool = False, down: bool = False,
                 resample_kernel: Sequence[float] = (1, 3, 3, 1), use_bias: bool = True,
                 kernel_init: Callable | None = None):
        super().__init__()
        assert not (up and down)
        assert kernel >= 1 and kernel % 2 == 1
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel, kernel))
        if kernel_init is not None:
            self.weight.data = kernel_init(self.weight.data.shape)
        if use_bias:
            self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up = up
        self.down = down
        self.resample_kernel = tuple(resample_kernel)
        self.kernel = kernel
        self.use_bias = use_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, k=self.resample_kernel)
        else:
            x = F.conv2d(x, self.weight, stride=1, padding=self.kernel // 2)
        if self.use_bias:
            x = x + self.bias.reshape(1, -1, 1, 1)
        return x
