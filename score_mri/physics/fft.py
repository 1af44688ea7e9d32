"""Centered orthonormal 2-D FFTs in the fastMRI convention (multi-coil operator, Algorithms 4 and 5).

``fft2c``/``ifft2c`` act on complex tensors; ``fft2c_new``/``ifft2c_new`` act on real views whose last
dimension holds (real, imag). All transforms run over the two image dimensions: the last two dims of a
complex tensor, dims (-3, -2) of a real view. Shifts follow NumPy's ``fftshift``/``ifftshift``.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["roll", "fftshift", "ifftshift", "fft2c", "ifft2c", "checkerboards", "sign_modulated", "fft2c_new", "ifft2c_new", "center_crop", "fft2_m", "ifft2_m"]


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


_CHECKERBOARDS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
SIGN_MODULATION = True  # False: always the shift copies (benchmarks/speed_round2.py compares the two)


def checkerboards(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, c s) for even h, w: s[n1, n2] = (-1)^(n1 + n2) and c = (-1)^(h/2 + w/2), in ``dtype`` (cached).

    For even sizes a shift by half the size is a modulation by (-1)^n on the other side of the transform, so
    fftshift(F(ifftshift(x))) = c s F(s x) (and the same for F^-1): two sign flips, which are exact, replace
    the four copies of the shifts. Only the FFT's own rounding differs (its input is s x, not a rolled x).
    """
    key = (h, w, dtype, device)
    if key not in _CHECKERBOARDS:
        if len(_CHECKERBOARDS) > 16:
            _CHECKERBOARDS.clear()
        n = torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)[None, :]
        sign = (1 - 2 * (n % 2)).to(dtype)
        c = -1 if (h // 2 + w // 2) % 2 else 1
        _CHECKERBOARDS[key] = (sign, sign * c)
    return _CHECKERBOARDS[key]


def sign_modulated(h: int, w: int) -> bool:
    """Whether :func:`fft2c`/:func:`ifft2c` of an h x w image use the sign modulation (even sizes, switch on)."""
    return SIGN_MODULATION and h % 2 == 0 and w % 2 == 0 and h > 0 and w > 0


def _centered(x: torch.Tensor, transform, norm: str) -> torch.Tensor:
    """fftshift(transform(ifftshift(x))) over the last two dims; sign modulation for even sizes, else shifts."""
    dims = (-2, -1)
    h, w = x.shape[-2:]
    if sign_modulated(h, w):
        s_in, s_out = checkerboards(h, w, x.dtype, x.device)
        return transform(x * s_in, dim=dims, norm=norm) * s_out
    return fftshift(transform(ifftshift(x, dim=dims), dim=dims, norm=norm), dim=dims)


def fft2c(x: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D FFT over the last two dims of a complex tensor: fftshift(F(ifftshift(x))).

    All leading dims (batch, coils) go through one FFT call; even sizes skip the shift copies
    (:func:`checkerboards`).
    """
    if not x.is_complex():
        raise TypeError(f"fft2c expects a complex tensor, got {x.dtype}")
    return _centered(x, torch.fft.fftn, norm)


def ifft2c(k: torch.Tensor, norm: str = "ortho") -> torch.Tensor:
    """Centered 2-D inverse FFT over the last two dims of a complex tensor: fftshift(F^-1(ifftshift(k)))."""
    if not k.is_complex():
        raise TypeError(f"ifft2c expects a complex tensor, got {k.dtype}")
    return _centered(k, torch.fft.ifftn, norm)


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
