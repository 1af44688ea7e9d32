"""Common layers of the score network (the subset of score_sde_pytorch's ``layers.py`` NCSN++ uses).

DDPM-style initialisation: variance scaling with fan_avg and a uniform distribution
(``default_init``); ``init_scale == 0`` means 1e-10 (a near-zero, not exactly zero, init).
"""
from __future__ import annotations

import math
import string
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def get_act(config) -> nn.Module:
    """Activation named by ``config.model.nonlinearity`` (elu, relu, lrelu, swish)."""
    name = config.model.nonlinearity.lower()
    if name == "elu":
        return nn.ELU()
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(negative_slope=0.2)
    if name == "swish":
        return nn.SiLU()
    raise NotImplementedError(f"activation function {config.model.nonlinearity!r} does not exist")


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = 1,
                     out_axis: int = 0, dtype: torch.dtype = torch.float32) -> Callable:
    """JAX-style variance-scaling initializer: returns ``init(shape) -> tensor``."""

    def _compute_fans(shape: Sequence[int]) -> tuple[float, float]:
        receptive_field_size = float(np.prod(shape)) / shape[in_axis] / shape[out_axis]
        return shape[in_axis] * receptive_field_size, shape[out_axis] * receptive_field_size

    def init(shape: Sequence[int], dtype: torch.dtype = dtype, device=None) -> torch.Tensor:
        fan_in, fan_out = _compute_fans(shape)
        if mode == "fan_in":
            denominator = fan_in
        elif mode == "fan_out":
            denominator = fan_out
        elif mode == "fan_avg":
            denominator = (fan_in + fan_out) / 2
        else:
            raise ValueError(f"invalid mode for variance scaling initializer: {mode}")
        variance = scale / denominator
        if distribution == "normal":
            return torch.randn(*shape, dtype=dtype, device=device) * np.sqrt(variance)
        if distribution == "uniform":
            return (torch.rand(*shape, dtype=dtype, device=device) * 2.0 - 1.0) * np.sqrt(3 * variance)
        raise ValueError(f"invalid distribution for variance scaling initializer: {distribution}")

    return init


def default_init(scale: float = 1.0) -> Callable:
    """The initialisation used in DDPM (fan_avg, uniform); scale 0 becomes 1e-10."""
    scale = 1e-10 if scale == 0 else scale
    return variance_scaling(scale, "fan_avg", "uniform")


def ddpm_conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 init_scale: float = 1.0, padding: int = 0) -> nn.Conv2d:
    """1x1 convolution with DDPM initialisation."""
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=padding, bias=bias)
    conv.weight.data = default_init(init_scale)(conv.weight.data.shape)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def ddpm_conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = True,
                 dilation: int = 1, init_scale: float = 1.0, padding: int = 1) -> nn.Conv2d:
    """3x3 convolution with DDPM initialisation."""
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=padding,
                     dilation=dilation, bias=bias)
    conv.weight.data = default_init(init_scale)(conv.weight.data.shape)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


def get_timestep_embedding(timesteps: torch.Tensor, embedding_dim: int,
                           max_positions: int = 10000) -> torch.Tensor:
    """Sinusoidal (transformer) embedding of discrete time steps [B] -> [B, embedding_dim]."""
    assert timesteps.ndim == 1
    half_dim = embedding_dim // 2
    emb = math.log(max_positions) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float32, device=timesteps.device) * -emb)
    emb = timesteps.float()[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:  # zero pad
        emb = F.pad(emb, (0, 1), mode="constant")
    assert emb.shape == (timesteps.shape[0], embedding_dim)
    return emb


def contract_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """tensordot(x, y, 1): contract the last axis of x with the first axis of y."""
    x_chars = list(string.ascii_lowercase[:x.ndim])
    y_chars = list(string.ascii_lowercase[x.ndim:x.ndim + y.ndim])
    y_chars[0] = x_chars[-1]
    out_chars = x_chars[:-1] + y_chars[1:]
    return torch.einsum(f"{''.join(x_chars)},{''.join(y_chars)}->{''.join(out_chars)}", x, y)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map over channels (a 1x1 conv stored as W [in, out])."""

    def __init__(self, in_dim: int, num_units: int, init_scale: float = 0.1):
        super().__init__()
        self.W = nn.Parameter(default_init(scale=init_scale)((in_dim, num_units)), requires_grad=True)
        self.b = nn.Parameter(torch.zeros(num_units), requires_grad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # [B, H, W, C]
        y = contract_inner(x, self.W) + self.b
        return y.permute(0, 3, 1, 2)  # [B, C', H, W]
