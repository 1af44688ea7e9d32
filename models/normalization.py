"""Normalization layers selected by ``config.model.normalization``.

NCSN++ only uses GroupNorm (built directly in ``layerspp`` with min(C // 4, 32) groups, eps 1e-6);
the NCSN-style instance norms are kept for configs that name them.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn as nn


def get_normalization(config, conditional: bool = False) -> Callable[..., nn.Module]:
    """Return a constructor ``norm(num_features)`` for ``config.model.normalization``."""
    norm = config.model.normalization
    if conditional:
        raise NotImplementedError(f"conditional normalization {norm!r} is not implemented")
    if norm == "GroupNorm":
        return lambda num_features: nn.GroupNorm(min(num_features // 4, 32), num_features, eps=1e-6)
    if norm == "InstanceNorm":
        return functools.partial(nn.InstanceNorm2d, affine=True)
    if norm == "InstanceNorm++":
        return InstanceNorm2dPlus
    if norm == "VarianceNorm":
        return VarianceNorm2d
    raise ValueError(f"Unknown normalization: {norm}")


class VarianceNorm2d(nn.Module):
    """Divide each channel by its spatial standard deviation, then scale (and optionally shift)."""

    def __init__(self, num_features: int, bias: bool = False):
        super().__init__()
        self.bias = bias
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        if bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = torch.var(x, dim=(2, 3), keepdim=True, unbiased=False)
        h = x / torch.sqrt(var + 1e-5) * self.alpha[None, :, None, None]
        if self.bias:
            h = h + self.beta[None, :, None, None]
        return h


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ (NCSN): instance norm plus a learned correction from the channel means."""

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.bias = bias
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        if bias:
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = torch.mean(x, dim=(2, 3))  # [B, C]
        m = torch.mean(means, dim=-1, keepdim=True)
        v = torch.var(means, dim=-1, keepdim=True)
        means = (means - m) / torch.sqrt(v + 1e-5)
        h = self.instance_norm(x) + means[..., None, None] * self.alpha[None, :, None, None]
        h = self.gamma[None, :, None, None] * h
        if self.bias:
            h = h + self.beta[None, :, None, None]
        return h
