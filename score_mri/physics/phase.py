"""Smooth phase estimation from the measured k-space centre, and phase (de)modulation of images.

The real-valued prior knows real, non-negative anatomy. A complex MR image x = m exp(i phi) with a smooth
phase phi is demodulated to m = Re(x exp(-i phi)), which the prior can denoise; data consistency acts on
the re-modulated image m exp(i phi). phi comes from the measured data only: the low-resolution image of
the fully sampled calibration block at the k-space centre, Hann-tapered to suppress ringing (the usual
homodyne / partial-Fourier phase estimate, e.g. Noll, Nishimura & Macovski 1991).

Shapes: k-space and images [B, C, H, W]; the DC sample sits at (H // 2, W // 2) (fftshifted k-space, as in
``operators.py``); masks are 0/1 tensors broadcastable to the k-space.
"""
from __future__ import annotations

import numpy as np
import torch

from score_mri.physics.masks import centre_block
from score_mri.physics.operators import LinearOperator, coil_slice

__all__ = ["calibration_size", "lowpass_size", "hann_window", "estimate_phase", "modulate", "demodulate", "PhaseDemodulated",
           "gaussian_smooth", "smooth_residual", "clip_magnitude", "smooth_phase"]

MIN_CALIB = 4  # smallest usable calibration block (pixels per side)


def calibration_size(mask: torch.Tensor | np.ndarray) -> tuple[int, int]:
    """(rows, columns) of the largest fully sampled block centred on the k-space centre, as a centred square.

    The block is the largest w x w square [n//2 - w//2, n//2 - w//2 + w) sampled in every coil and batch
    entry (for 1-D column masks: the auto-calibration columns). ValueError when it is smaller than 4 x 4.
    """
    w = centre_block(mask)
    if w < MIN_CALIB:
        raise ValueError(f"only a {w}x{w} fully sampled k-space centre: phase estimation needs at least "
                         f"{MIN_CALIB}x{MIN_CALIB} (use a larger --center_fraction)")
    return w, w


def hann_window(shape: tuple[int, int], size: tuple[int, int], device: torch.device | str = "cpu"
                ) -> torch.Tensor:
    """Separable Hann taper [H, W] over the centred block ``size`` (non-zero inside it, zero outside)."""
    H, W = shape
    out = torch.zeros(H, W, dtype=torch.float32)
    h, w = size
    wy = torch.from_numpy(np.hanning(h + 2)[1:-1].astype(np.float32))
    wx = torch.from_numpy(np.hanning(w + 2)[1:-1].astype(np.float32))
    y0, x0 = H // 2 - h // 2, W // 2 - w // 2
    out[y0:y0 + h, x0:x0 + w] = wy[:, None] * wx[None, :]
    return out.to(device)


def lowpass_size(mask: torch.Tensor | np.ndarray, min_density: float = 0.3) -> tuple[int, int]:
    """Side of the largest centred square (at most a quarter of the matrix) such that it and every smaller one
    have ``min_density`` of their k-space sampled.

    For masks without a usable fully sampled centre (Poisson disc, variable density, no calibration
    lines): the densely sampled low frequencies. UserError when no centred square of 4 x 4 or more reaches it.
    """
    from score_mri.errors import UserError
    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
    m = (np.abs(m.reshape(-1, *m.shape[-2:])) > 0).mean(axis=0)  # [H, W] sampled fraction over coils/batch
    H, W = m.shape

    def dense(w: int) -> bool:
        y0, x0 = H // 2 - w // 2, W // 2 - w // 2
        return float(m[y0:y0 + w, x0:x0 + w].mean()) >= min_density

    w = 0  # grow from the centre while the square stays dense
    while w < max(MIN_CALIB, min(H, W) // 4) and dense(max(w + 1, MIN_CALIB)):
        w = max(w + 1, MIN_CALIB)
    if w < MIN_CALIB:
        raise UserError(f"no calibration region: the k-space centre is sampled too sparsely to estimate the "
                        f"image phase (less than {min_density:.0%} of the central {MIN_CALIB}x{MIN_CALIB})")
    return w, w


def _density(mask: torch.Tensor, shape: tuple[int, int], device) -> torch.Tensor:
    """Local sampling density [H, W] of ``mask`` (5 x 5 box average of the sampled points; 1 off the samples)."""
    m = (torch.abs(mask.reshape(-1, *mask.shape[-2:]).float()) > 0).float().mean(dim=0)   # [H, W]
    m = torch.broadcast_to(m, shape).to(device)
    d = torch.nn.functional.avg_pool2d(m[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]
    return torch.where(m > 0, d.clamp_min(1e-3), torch.ones_like(d))


def estimate_phase(op: LinearOperator, y: torch.Tensor, mask: torch.Tensor,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """phi = angle(A^H (w * y)): phase of the Hann-tapered low-resolution image of the calibration block.

    ``op`` maps k-space to the state's image space with its adjoint (a single-coil or per-coil Cartesian
    operator: one phase per coil; a SENSE operator: the phase of the coil-combined image). Real tensor
    shaped like ``op.A_H(y)``. Without a fully sampled centre of 4 x 4 or more, the taper covers the densely
    sampled centre (:func:`lowpass_size`) and the data are weighted by the inverse local sampling density.
    """
    shape = tuple(y.shape[-2:])
    dense_centre = False
    if size is None:
        try:
            size = calibration_size(mask)
        except ValueError:
            size, dense_centre = lowpass_size(mask), True
    w = hann_window(shape, size, y.device)
    if dense_centre:
        w = w / _density(mask, shape, y.device)
    return torch.angle(op.A_H(w * y))


def modulate(m: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """x = m exp(i phi) (complex)."""
    return m * torch.polar(torch.ones_like(phi), phi)


def demodulate(x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """x exp(-i phi) (complex; its real part is the demodulated image)."""
    return x * torch.polar(torch.ones_like(phi), -phi)


class PhaseDemodulated(LinearOperator):
    """The operator ``op`` seen from the demodulated image m: A' m = A (m exp(i phi)).

    ``project`` is the base operator's data consistency on the re-modulated image, demodulated back
    (complex: samplers keep the real part). ``restrict`` slices coils of both operator and phase.
    """

    def __init__(self, op, phi: torch.Tensor):
        self.op, self.phi = op, phi

    def A(self, m: torch.Tensor) -> torch.Tensor:
        """A (m exp(i phi))."""
        return self.op.A(modulate(m, self.phi))

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """exp(-i phi) A^H y."""
        return demodulate(self.op.A_H(y), self.phi)

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """The base operator's zero-filled image, demodulated."""
        return demodulate(self.op.zero_filled(y), self.phi)

    def project(self, m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """exp(-i phi) P(m exp(i phi), y) with P the base operator's data consistency."""
        return demodulate(self.op.project(modulate(m, self.phi), y), self.phi)

    def remodulate(self, m: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The complex result: data consistency of m exp(i phi) (exact where the base projection is)."""
        return self.op.project(modulate(m, self.phi), y)

    def at_noise_level(self, sigma: float) -> "PhaseDemodulated":
        """The base operator at noise level sigma, same phase."""
        return PhaseDemodulated(self.op.at_noise_level(sigma), self.phi)

    def restrict(self, sl: slice) -> "PhaseDemodulated":
        """The operator of the coils ``sl``."""
        return PhaseDemodulated(self.op.restrict(sl), coil_slice(self.phi, sl))


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of a real tensor over its last two dims (std ``sigma`` pixels, kernel
    radius ceil(4 sigma) clipped to the image, reflected edges); ``sigma`` 0 returns ``x``."""
    if sigma <= 0:
        return x
    if x.is_complex():
        raise TypeError("gaussian_smooth takes a real tensor")
    H, W = x.shape[-2:]
    out = x.reshape(-1, 1, H, W)
    for dim, n in ((-2, H), (-1, W)):
        r = min(int(np.ceil(4 * sigma)), n - 1)
        if r < 1:
            continue
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=out.dtype, device=out.device) / sigma) ** 2)
        k = (k / k.sum()).reshape((1, 1, -1, 1) if dim == -2 else (1, 1, 1, -1))
        pad = (0, 0, r, r) if dim == -2 else (r, r, 0, 0)
        out = torch.nn.functional.conv2d(torch.nn.functional.pad(out, pad, mode="reflect"), k)
    return out.reshape(x.shape)


def smooth_residual(m: torch.Tensor, sigma: float) -> torch.Tensor:
    """Re(m) + i G_sigma * Im(m): the demodulated image with its imaginary residual Gaussian-smoothed.

    The residual Im(m) = |x| sin(phi_true - phi) carries the smooth phase error times the anatomy; the
    real-valued prior leaves a white noise floor in it at the last noise levels, which the magnitude turns
    into a background bias. A real ``m`` (or ``sigma`` 0) is returned unchanged.
    """
    if not m.is_complex() or sigma <= 0:
        return m
    return torch.complex(m.real, gaussian_smooth(m.imag, sigma))


def clip_magnitude(m: torch.Tensor) -> torch.Tensor:
    """max(Re(m), 0) + i Im(m): the demodulated image's real part, |x| cos(phi_true - phi), is non-negative."""
    return torch.complex(m.real.clamp_min(0), m.imag) if m.is_complex() else m.clamp_min(0)


def smooth_phase(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random phase map [H, W] (radians) for simulating complex images: x = m exp(i phi).

    Low order, like a measured MR phase: a constant and linear terms (each uniform in +-0.6 pi), quadratic
    B0-like curvature (each term uniform in +-0.4 pi) and one Gaussian bump (sigma 0.25, height 0.5-1 pi)
    over [-1, 1] x [-1, 1]; drawn from ``np.random.RandomState(seed)`` (the global state is not touched).
    """
    rng = np.random.RandomState(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    lin = rng.uniform(-0.6, 0.6, 3) * np.pi
    quad = rng.uniform(-0.4, 0.4, 3) * np.pi
    cy, cx = rng.uniform(-0.4, 0.4, 2)
    bump = rng.uniform(0.5, 1.0) * np.pi * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.25 ** 2))
    return lin[0] + lin[1] * x + lin[2] * y + quad[0] * x ** 2 + quad[1] * y ** 2 + quad[2] * x * y + bump
