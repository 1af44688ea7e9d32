"""Measurement operators on a zero-padded image grid, so the score model runs at any matrix size.

The model needs sides divisible by 2**(levels - 1). An H x W problem runs on an Hp x Wp grid (the next
multiples) with A_p = pad_k ∘ A ∘ crop and A_p^H = pad ∘ A^H ∘ crop_k: the image is cropped back to H x W
before the original operator's FFT, and the measured k-space is embedded (zeros around it) in an Hp x Wp
array so every state and k-space tensor of the samplers has the padded shape. The padding region of the
image is outside the measurement model; every data-consistency step sets it to zero. Both paddings put the
original's centre index (n // 2) at the padded centre (np // 2), so centred calibration blocks line up.
"""
from __future__ import annotations

import torch

from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian

__all__ = ["padded_shape", "pad", "crop", "pad_operator", "PaddedSingleCoil", "PaddedMultiCoil"]


def padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The smallest (Hp, Wp) >= ``shape`` with both sides divisible by ``multiple``."""
    m = max(1, int(multiple))
    return tuple(-(-int(n) // m) * m for n in shape)


def _offsets(small: tuple[int, int], big: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the small grid inside the big one (centre n // 2 onto np // 2)."""
    return tuple(b // 2 - s // 2 for s, b in zip(small, big))


def pad(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the last two dims of ``x`` to ``shape``, centre onto centre."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(shape):
        return x
    y0, x0 = _offsets((h, w), shape)
    out = x.new_zeros(*x.shape[:-2], *shape)
    out[..., y0:y0 + h, x0:x0 + w] = x
    return out


def crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`pad`: the ``shape`` block of the last two dims of ``x``."""
    H, W = x.shape[-2:]
    if (H, W) == tuple(shape):
        return x
    y0, x0 = _offsets(tuple(shape), (H, W))
    return x[..., y0:y0 + shape[0], x0:x0 + shape[1]]


class _Padded:
    """Mixin: the operator ``inner`` (H x W) acting on an Hp x Wp grid; image and k-space padded with zeros."""

    def __init__(self, inner, shape: tuple[int, int]):
        self.inner, self.shape = inner, tuple(shape)
        self.small = tuple(inner.mask.shape[-2:])
        self.mask = pad(inner.mask, self.shape)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """pad_k(A crop(x))."""
        return pad(self.inner.A(crop(x, self.small)), self.shape)

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """pad(A^H crop_k(y)): the adjoint of :meth:`A`."""
        return pad(self.inner.A_H(crop(y, self.small)), self.shape)

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """The inner operator's zero-filled image, padded."""
        return pad(self.inner.zero_filled(crop(y, self.small)), self.shape)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Data consistency of the cropped image, padded with zeros (the padding region is set to 0)."""
        return pad(self.inner.project(crop(x, self.small), crop(y, self.small)), self.shape)

    def restrict(self, sl: slice):
        """The operator of the coils ``sl``."""
        return type(self)(self.inner.restrict(sl), self.shape)


class PaddedSingleCoil(_Padded, SingleCoilCartesian):
    """:class:`SingleCoilCartesian` on a zero-padded grid."""


class PaddedMultiCoil(_Padded, MultiCoilCartesian):
    """:class:`MultiCoilCartesian` on a zero-padded grid."""


def pad_operator(op, shape: tuple[int, int]):
    """``op`` (single-coil, multi-coil Cartesian or SENSE, on H x W) acting on the padded grid ``shape``."""
    if isinstance(op, _Padded):
        op = op.inner
    if isinstance(op, SENSE):
        if tuple(op.sens.shape[-2:]) == tuple(shape):
            return op
        return SENSE(pad(op.sens, shape), pad_operator(op.cartesian, shape))  # maps are zero in the padding
    if getattr(op, "mask", None) is not None and tuple(op.mask.shape[-2:]) == tuple(shape):
        return op
    if isinstance(op, SingleCoilCartesian):
        return PaddedSingleCoil(op, shape)
    if isinstance(op, MultiCoilCartesian):
        return PaddedMultiCoil(op, shape)
    raise ValueError(f"cannot pad an operator of type {type(op).__name__} to {shape}")
