"""Building blocks of NCSN++ (Song et al. 2021, Appendix H), as in score_sde_pytorch ``layerspp.py``.

Module and attribute names (``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0`` ...) are kept exactly:
the checkpoint keys depend on them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import layers, up_or_down_sampling

conv1x1 = layers.ddpm_conv1x1
conv3x3 = layers.ddpm_conv3x3
NIN = layers.NIN
default_init = layers.default_init

_SQRT2 = math.sqrt(2.0)


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups and eps 1e-6, as everywhere in NCSN++."""
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-6)


class GaussianFourierProjection(nn.Module):
    """Gaussian Fourier features of log(sigma): [sin, cos](2*pi*x*W), W ~ N(0, scale^2) frozen."""

    def __init__(self, embedding_size: int = 256, scale: float = 1.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_proj = x[:, None] * self.W[None, :] * 2 * np.pi  # [B, E]
        return torch.cat([torch.sin(x_proj), torch.cos(x_proj)], dim=-1)  # [B, 2E]


class Combine(nn.Module):
    """Combine a pyramid branch with a feature map (1x1 conv, then concat or sum)."""

    def __init__(self, dim1: int, dim2: int, method: str = "cat"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)  # name of the original (checkpoint key)
        self.method = method

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.Conv_0(x)
        if self.method == "cat":
            return torch.cat([h, y], dim=1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"Method {self.method} not recognized.")


class AttnBlockpp(nn.Module):
    """Spatial self-attention over all H*W positions (DDPM), optional 1/sqrt(2) skip rescale."""

    def __init__(self, channels: int, skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        self.GroupNorm_0 = _group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.GroupNorm_0(x)
        q = self.NIN_0(h)
        k = self.NIN_1(h)
        v = self.NIN_2(h)

        w = torch.einsum("bchw,bcij->bhwij", q, k) * (int(C) ** (-0.5))  # [B, H, W, H, W]
        w = torch.reshape(w, (B, H, W, H * W))
        w = F.softmax(w, dim=-1)
        w = torch.reshape(w, (B, H, W, H, W))
        h = torch.einsum("bhwij,bcij->bchw", w, v)
        h = self.NIN_3(h)
        if not self.skip_rescale:
            return x + h
        return (x + h) / _SQRT2


class Upsample(nn.Module):
    """2x upsampling: nearest (+3x3 conv) or FIR (optionally fused with a 3x3 conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if not fir:
            if with_conv:
                self.Conv_0 = conv3x3(in_ch, out_ch)
        elif with_conv:
            self.Conv2d_0 = up_or_down_sampling.Conv2d(in_ch, out_ch, kernel=3, up=True,
                                                       resample_kernel=fir_kernel, use_bias=True,
                                                       kernel_init=default_init())
        self.fir = fir
        self.with_conv = with_conv
        self.fir_kernel = tuple(fir_kernel)
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if not self.fir:
            h = F.interpolate(x, (H * 2, W * 2), mode="nearest")
            if self.with_conv:
                h = self.Conv_0(h)
        elif not self.with_conv:
            h = up_or_down_sampling.upsample_2d(x, self.fir_kernel, factor=2)
        else:
            h = self.Conv2d_0(x)
        assert h.shape == (B, self.out_ch, 2 * H, 2 * W)
        return h


class Downsample(nn.Module):
    """2x downsampling: average pool / strided 3x3 conv, or FIR (optionally fused with a 3x3 conv)."""

    def __init__(self, in_ch: int, out_ch: int | None = None, with_conv: bool = False,
                 fir: bool = False, fir_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        if not fir:
            if with_conv:
                self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        elif with_conv:
            self.Conv2d_0 = up_or_down_sampling.Conv2d(in_ch, out_ch, kernel=3, down=True,
                                                       resample_kernel=fir_kernel, use_bias=True,
                                                       kernel_init=default_init())
        self.fir = fir
        self.fir_kernel = tuple(fir_kernel)
        self.with_conv = with_conv
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        if not self.fir:
            x = F.pad(x, (0, 1, 0, 1))  # emulate TF 'SAME' padding
            if self.with_conv:
                x = self.Conv_0(x)
            else:
                x = F.avg_pool2d(x, 2, stride=2)
        elif not self.with_conv:
            x = up_or_down_sampling.downsample_2d(x, self.fir_kernel, factor=2)
        else:
            x = self.Conv2d_0(x)
        assert x.shape == (B, self.out_ch, H // 2, W // 2)
        return x


class ResnetBlockDDPMpp(nn.Module):
    """ResNet block adapted from DDPM (resblock_type 'ddpm')."""

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None,
                 temb_dim: int | None = None, conv_shortcut: bool = False, dropout: float = 0.1,
                 skip_rescale: bool = False, init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
            self.Dense_0.weight.data = default_init()(self.Dense_0.weight.data.shape)
            nn.init.zeros_(self.Dense_0.bias)
        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            if conv_shortcut:
                self.Conv_2 = conv3x3(in_ch, out_ch)
            else:
                self.NIN_0 = NIN(in_ch, out_ch)
        self.skip_rescale = skip_rescale
        self.act = act
        self.out_ch = out_ch
        self.conv_shortcut = conv_shortcut

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))
        h = self.Conv_0(h)
        if temb is not None:
            h += self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.act(self.GroupNorm_1(h))
        h = self.Dropout_0(h)
        h = self.Conv_1(h)
        if x.shape[1] != self.out_ch:
            x = self.Conv_2(x) if self.conv_shortcut else self.NIN_0(x)
        if not self.skip_rescale:
            return x + h
        return (x + h) / _SQRT2


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style ResNet block with optional FIR up/down-sampling inside (resblock_type 'biggan').

    h = Conv_1(Dropout(act(GN_1(Conv_0(resample(act(GN_0(x)))) + Dense_0(act(temb)))))),
    out = (Conv_2(resample(x)) + h) / sqrt(2) with skip_rescale.
    """

    def __init__(self, act: nn.Module, in_ch: int, out_ch: int | None = None,
                 temb_dim: int | None = None, up: bool = False, down: bool = False,
                 dropout: float = 0.1, fir: bool = False,
                 fir_kernel: Sequence[float] = (1, 3, 3, 1), skip_rescale: bool = True,
                 init_scale: float = 0.0):
        super().__init__()
        out_ch = out_ch if out_ch else in_ch
        self.GroupNorm_0 = _group_norm(in_ch)
        self.up = up
        self.down = down
        self.fir = fir
        self.fir_kernel = tuple(fir_kernel)

        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = nn.Linear(temb_dim, out_ch)
            self.Dense_0.weight.data = default_init()(self.Dense_0.weight.shape)
            nn.init.zeros_(self.Dense_0.bias)

        self.GroupNorm_1 = _group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)

        self.skip_rescale = skip_rescale
        self.act = act
        self.in_ch = in_ch
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.act(self.GroupNorm_0(x))

        if self.up:
            if self.fir:
                h = up_or_down_sampling.upsample_2d(h, self.fir_kernel, factor=2)
                x = up_or_down_sampling.upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = up_or_down_sampling.naive_upsample_2d(h, factor=2)
                x = up_or_down_sampling.naive_upsample_2d(x, factor=2)
        elif self.down:
            if self.fir:
                h = up_or_down_sampling.downsample_2d(h, self.fir_kernel, factor=2)
                x = up_or_down_sampling.downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = up_or_down_sampling.naive_downsample_2d(h, factor=2)
                x = up_or_down_sampling.naive_downsample_2d(x, factor=2)

        h = self.Conv_0(h)
        # Per-channel bias from the noise-level embedding.
        if temb is not None:
            h += self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.act(self.GroupNorm_1(h))
        h = self.Dropout_0(h)
        h = self.Conv_1(h)

        if self.in_ch != self.out_ch or self.up or self.down:
            x = self.Conv_2(x)

        if not self.skip_rescale:
            return x + h
        return (x + h) / _SQRT2
