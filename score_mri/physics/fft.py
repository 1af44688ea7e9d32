"""Centered orthonormal 2-D FFTs in the fastMRI convention (multi-coil operator, Algorithms 4 and 5).

``fft2c``/``ifft2c`` act on complex tensors; ``fft2c_new``/``ifft2c_new`` act on real views whose last
dimension holds (real, imag). All transforms run over the two image dimensions: the last two dims of a
complex tensor, dims (-3, -2) of a real view. Shifts follow NumPy's ``fftshift``/``ifftshift``.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["roll", "fftshift", "ifftshift", "fft2c", "ifft2c", "fft2c_new", "ifft2c_new", "center_crop", "fft2_m", "ifft2_m"]


def _roll_one_dim(x: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """Circularly shift ``x`` by ``shift`` along one dimension (NumPy ``roll`` semantics)."""
    n = x.size(dim)
    if n == 0:
        return x
    shift = shift % n
    if shift == 0:
        return x
    head = x.narrow(dim, 0, n - shift)
    tail = x.narrow(dim, n - shift, shift)
    return torch.cat((tail, head), dim=dim)


def roll(x: torch.Tensor, shift: Sequence[int], dim: Sequence[int]) -> torch.Tensor:
    """Roll ``x`` by ``shift[k]`` along ``dim[k]`` for each k, as ``numpy.roll``."""
    if len(shift) != len(dim):
        raise ValueError(f"roll: got {len(shift)} shifts for {len(dim)} dims")
    for s, d in zip(shift, dim):
        x = _roll_one_dim(x, int(s), d)
    return x


def fftshift(x: torch.Tensor, dim: Sequence[int] | None = None) -> torch.Tensor:
    """Move the zero frequency to the centre: roll by n//2 along each dim (``numpy.fft.fftshift``)."""
    if dim is None:
        dim = tuple(range(x.dim()))
    return roll(x, [x.size(d) // 2 for d in dim], dim)


def ifftshift(x: torch.Tensor, dim: Sequence[int] | None = None) -> torch.Tensor:
    """Inverse of :func:`fftshift`: roll by (n+1)//2 along each dim (``numpy.fft.ifftshift``)."""
    if dim is None:
        dim = tuple(range(x.dim()))
    return roll(x, [(x.size(d) + 1) // 2 for d in dim], dim)


def fft2c(x: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D FFT over the last two dims of a complex tensor: fftshift(F(ifftshift(x)))."""
    if not x.is_complex():
        raise TypeError(f"fft2c expects a complex tensor, got {x.dtype}")
    dims = (-2, -1)
    x = ifftshift(x, dim=dims)
    k = torch.fft.fftn(x, dim=dims, norm=norm)
    return fftshift(k, dim=dims)


def ifft2c(k: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D inverse FFT over the last two dims of a complex tensor: fftshift(F^-1(ifftshift(k)))."""
    if not k.is_complex():
        raise TypeError(f"ifft2c expects a complex tensor, got {k.dtype}")
    dims = (-2, -1)
    k = ifftshift(k, dim=dims)
    x = torch.fft.ifftn(k, dim=dims, norm=norm)
    return fftshift(x, dim=dims)


def _as_complex(data: torch.Tensor) -> torch.Tensor:
    """View a real tensor [..., 2] as complex [...]."""
    if data.dim() < 3 or data.shape[-1] != 2:
        raise ValueError(f"expected a real view with last dimension 2 and >= 3 dims, got {tuple(data.shape)}")
    return torch.view_as_complex(data.contiguous())


def fft2c_new(data: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D FFT of a real view [..., H, W, 2]; returns the same layout."""
    return torch.view_as_real(fft2c(_as_complex(data), norm=norm))


def ifft2c_new(data: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D inverse FFT of a real view [..., H, W, 2]; returns the same layout."""
    return torch.view_as_real(ifft2c(_as_complex(data), norm=norm))


def center_crop(x, shape: tuple[int, int]):
    """Centre crop of the last two axes to at most ``shape`` (fastMRI ``center_crop``; NumPy or torch)."""
    H, W = x.shape[-2:]
    h, w = min(int(shape[0]), H), min(int(shape[1]), W)
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def fft2_m(x: torch.Tensor) -> torch.Tensor:
    """Multi-coil k-space: centered orthonormal FFT (fastMRI ``fft2c``) of a complex tensor."""
    return fft2c(x)


def ifft2_m(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2_m`: centered orthonormal inverse FFT (fastMRI ``ifft2c``)."""
    return ifft2c(k)
