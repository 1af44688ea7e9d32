"""Measurement operators of score-MRI and a batched complex conjugate-gradient solver.

Each CLI builds its operator once; the same object simulates retrospective measurements (``A``), gives
the zero-filled image (``zero_filled``), and performs the sampler's data consistency (``project``, the
exact projection onto {x : A x = y} where one exists, or ``normal`` with :func:`conjugate_gradient`).

* :class:`SingleCoilCartesian`: Algorithms 2 and 3, the original's shifted, unnormalised FFT.
* :class:`MultiCoilCartesian`: Algorithms 4 and 5, one centered orthonormal k-space per coil (fastMRI).
* :class:`CoilMaps` (x -> S_c x) and :class:`SENSE` = any Fourier operator after :class:`CoilMaps`
  (Pruessmann et al. 1999; :class:`MultiCoilCartesian` by default), the model of Algorithm 5's Kaczmarz step
  and of the SENSE sampler.

Every operator solves (A^H A + gamma I) x = A^H y + gamma x_hat with :meth:`LinearOperator.solve` (batched
complex CG on the normal operator). Fourier operators are registered by name (:func:`register_fourier`,
:func:`get_fourier`): a new one is a module with a :class:`LinearOperator` subclass and its registration.

Shapes: images and k-space are [B, C, H, W] (C coils, 1 for single-coil and SENSE images); masks are real
0/1 tensors broadcastable to the k-space. Adjointness <A x, y> = <x, A_H y> is tested for every operator.
"""
from __future__ import annotations

from typing import Callable

import torch

from models.registry import lookup, registrar
from score_mri.physics import fft as _fft
from score_mri.physics.fft import fft2c, ifft2c

__all__ = ["fft2", "ifft2", "coil_slice", "LinearOperator", "SingleCoilCartesian", "MultiCoilCartesian", "CoilMaps",
           "SENSE", "FOURIER_OPERATORS", "register_fourier", "get_fourier", "conjugate_gradient",
           "data_consistency", "data_consistency_real", "kaczmarz_original"]

FOURIER_OPERATORS: dict[str, type] = {}
register_fourier = registrar(FOURIER_OPERATORS, "Fourier operator")


def get_fourier(name: str) -> type:
    """The Fourier operator class registered under ``name`` ('cartesian', 'cartesian_single', ...)."""
    return lookup(FOURIER_OPERATORS, "Fourier operator", name)


def fft2(x: torch.Tensor) -> torch.Tensor:
    """Single-coil k-space: fftshift(F x) over the last two dims (unnormalised; no ifftshift before F)."""
    return torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))


def ifft2(k: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2`: F^-1 ifftshift(k) over the last two dims (1/(H W) normalisation)."""
    return torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)))


def coil_slice(t: torch.Tensor, sl: slice) -> torch.Tensor:
    """The coil slice ``sl`` of a [B, C, H, W] tensor; a tensor shared by all coils (C = 1) passes through."""
    return t[:, sl] if t.dim() == 4 and t.shape[1] > 1 else t


class LinearOperator:
    """A linear measurement model with forward ``A``, adjoint ``A_H`` and normal operator ``normal``."""

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward model."""
        raise NotImplementedError

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`A`."""
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Normal operator A^H A x."""
        return self.A_H(self.A(x))

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-filled image of the measurements y (the adjoint, up to the transform's normalisation)."""
        return self.A_H(y)

    def at_noise_level(self, sigma: float) -> "LinearOperator":
        """This operator for a prior estimate at noise level sigma (an exact projection does not depend on it)."""
        return self

    def solve(self, x_hat: torch.Tensor, y: torch.Tensor, gamma: "float | torch.Tensor", n_iter: int) -> torch.Tensor:
        """Regularised data consistency: ``n_iter`` CG steps on (A^H A + gamma I) x = A^H y + gamma x_hat from x_hat."""
        return conjugate_gradient(lambda v: self.normal(v) + gamma * v, self.A_H(y) + gamma * x_hat,
                                  x_hat, n_iter)


class _Cartesian(LinearOperator):
    """A x = mask * fwd(x) for a 2-D transform pair (fwd, inv) that inverts exactly; masks are 0/1."""

    fwd = staticmethod(fft2c)
    inv = staticmethod(ifft2c)

    def __init__(self, mask: torch.Tensor):
        self.mask = mask  # [B or 1, C or 1, H, W]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward model: masked k-space [B, C, H, W]."""
        return self.mask * self.fwd(x)

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """inv(mask * y): the zero-filled image in the image's own units."""
        return self.inv(self.mask * y)

    def measured(self, kspace: torch.Tensor) -> torch.Tensor:
        """Measured k-space in the fastMRI convention (centered orthonormal ``fft2c``) -> y in this operator's units."""
        return self.mask * self.fwd(ifft2c(kspace))

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Data consistency: replace the measured k-space of x by y (y already masked), inv(fwd(x)(1-M) + y)."""
        return self.inv(self.fwd(x) * (1. - self.mask) + y)

    def restrict(self, sl: slice) -> "_Cartesian":
        """The operator of the coils ``sl`` (a shared mask passes through)."""
        return type(self)(coil_slice(self.mask, sl))


@register_fourier(name="cartesian_single")
class SingleCoilCartesian(_Cartesian):
    """Single-coil Cartesian MRI, A x = mask * fft2(x) with the original shifted, unnormalised FFT.

    Because ``fft2`` is unnormalised, ``ifft2`` is the adjoint only up to the factor H*W: ``A_H`` is the
    true adjoint (H*W * ifft2(mask * y)), while ``project`` and ``zero_filled`` keep the original's
    ``ifft2``, which inverts ``fft2`` exactly.
    """

    fwd = staticmethod(fft2)
    inv = staticmethod(ifft2)

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`A`: H*W * ifft2(mask * y)."""
        h, w = y.shape[-2:]
        return (h * w) * ifft2(self.mask * y)


@register_fourier(name="cartesian")
class MultiCoilCartesian(_Cartesian):
    """Multi-coil Cartesian MRI, one k-space per coil: A x = mask * fft2c(x) (orthonormal, so A_H = ifft2c)."""

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`A`: ifft2c(mask * y)."""
        return ifft2c(self.mask * y)

    def measured(self, kspace: torch.Tensor) -> torch.Tensor:
        """Measured k-space (fastMRI convention, this operator's own): y = mask * kspace, no transform."""
        return self.mask * kspace


class CoilMaps(LinearOperator):
    """Coil sensitivities: x [B, 1, H, W] -> S_c x [B, C, H, W]; the adjoint combines sum_c conj(S_c) x_c."""

    def __init__(self, sens: torch.Tensor):
        self.sens = sens  # [B or 1, C, H, W] complex

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Coil images S x."""
        return self.sens * x

    def A_H(self, x_coils: torch.Tensor) -> torch.Tensor:
        """Coil combination S^H x_coils = sum_c conj(S_c) x_c."""
        return torch.sum(self.sens_conj() * x_coils, dim=1, keepdim=True)

    def sens_conj(self) -> torch.Tensor:
        """conj(S) materialised once per maps tensor (a lazy conj view makes every product ~25% slower)."""
        cached = getattr(self, "_conj", None)
        if cached is None or cached[0] is not self.sens:
            cached = (self.sens, torch.conj(self.sens).resolve_conj())
            self._conj = cached
        return cached[1]


class SENSE(LinearOperator):
    """SENSE model A x = F(S_c x): a Fourier operator F (one k-space per coil) composed with :class:`CoilMaps`.

    ``fourier`` is any operator on coil images [B, C, H, W] (a registered Fourier operator), or a mask tensor,
    which means :class:`MultiCoilCartesian` (mask * fft2c). x [B, 1, H, W] -> coil k-space; with ESPIRiT maps
    normalised so that sum_c |S_c|^2 = 1 inside the support, A^H A has eigenvalues in [0, 1].
    """

    def __init__(self, sens: torch.Tensor, fourier: "LinearOperator | torch.Tensor"):
        self.maps = CoilMaps(sens)
        self.fourier = MultiCoilCartesian(fourier) if isinstance(fourier, torch.Tensor) else fourier
        self.sens, self.mask = sens, getattr(self.fourier, "mask", None)

    @property
    def cartesian(self) -> LinearOperator:
        """The Fourier operator on the coil images (its name from when it was always Cartesian)."""
        return self.fourier

    @cartesian.setter
    def cartesian(self, op: LinearOperator) -> None:
        self.fourier = op

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Forward model: F(S_c x) for every coil c; x [B, 1, H, W] -> [B, C, ...]."""
        return self.fourier.A(self.maps.A(x))

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint: sum_c conj(S_c) F^H(y)_c; [B, C, ...] -> [B, 1, H, W]."""
        return self.maps.A_H(self.fourier.A_H(y))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """A^H A x; for the Cartesian model on even sizes as sum_c conj(s S_c) F^-1(mask F(s S_c x)) with the
        checkerboard s folded into the maps once (fft.checkerboards): no shift copies or sign flips per call."""
        maps = self._modulated_maps(x)
        if maps is None:
            return self.A_H(self.A(x))
        dims = (-2, -1)
        k = torch.fft.fftn(maps[0] * x, dim=dims, norm="ortho")
        return torch.sum(maps[1] * torch.fft.ifftn(self.fourier.mask * k, dim=dims, norm="ortho"), dim=1,
                         keepdim=True)

    def _modulated_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(s S, conj(s S)) cached per maps tensor, or None where the fast normal operator does not apply."""
        sens, h, w = self.maps.sens, x.shape[-2], x.shape[-1]
        if type(self.fourier) is not MultiCoilCartesian or not _fft.sign_modulated(h, w) or not sens.is_complex():
            return None
        cached = getattr(self, "_modulated", None)
        if cached is None or cached[0] is not sens:
            s_in, _ = _fft.checkerboards(h, w, sens.dtype, sens.device)
            modulated = sens * s_in
            cached = (sens, modulated, torch.conj(modulated).resolve_conj())
            self._modulated = cached
        return cached[1], cached[2]

    def combine(self, x_coils: torch.Tensor) -> torch.Tensor:
        """Coil combination S^H: sum_c conj(S_c) x_c; [B, C, H, W] -> [B, 1, H, W]."""
        return self.maps.A_H(x_coils)

    def expand(self, x: torch.Tensor) -> torch.Tensor:
        """Coil images S x; [B, 1, H, W] -> [B, C, H, W]."""
        return self.maps.A(x)

    def kaczmarz(self, x: torch.Tensor, y: torch.Tensor, lamb: float) -> torch.Tensor:
        """Kaczmarz/Landweber step of Algorithm 5 on the image: x + lamb * A^H (y - A x); x [B, 1, H, W]."""
        return x + lamb * self.A_H(y - self.A(x))

    def kaczmarz_coils(self, x_coils: torch.Tensor, y: torch.Tensor, lamb: float) -> torch.Tensor:
        """Algorithm 5 SENSE step on coil images (this project's fix of the original's step).

        With the coils combined by S^H, this is one gradient step on 1/2 ||y - A S^H x_coils||^2:
        x_c <- x_c + lamb * S_c A^H (y - A S^H x_coils). The combined image takes the SENSE step
        x <- x + lamb A^H(y - A x) (exactly so when sum_c |S_c|^2 = 1, as for ESPIRiT maps inside the
        support), and each coil keeps the part of its image that the combination does not see.
        """
        update = lamb * self.A_H(y - self.A(self.combine(x_coils)))  # [B, 1, H, W]
        return x_coils + self.expand(update)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-batch-element inner product <a, b> = sum conj(a) b over all but the first dim -> [B]."""
    return torch.sum((torch.conj(a) * b).reshape(a.shape[0], -1), dim=1)


def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x0: torch.Tensor,
                       n_iter: int, tol: float = 0.0) -> torch.Tensor:
    """Batched complex CG for the Hermitian positive-definite system normal(x) = rhs, started at x0.

    Each batch element (first dim) runs its own CG recursion; an element whose residual norm falls to
    ``tol`` times its right-hand side's norm stops changing.
    """
    x = x0.clone()
    r = rhs - normal(x)
    p = r.clone()
    rs = _dot(r, r).real                                                    # [B]
    stop = tol * torch.sqrt(_dot(rhs, rhs).real)
    shape = (-1,) + (1,) * (rhs.dim() - 1)
    for _ in range(n_iter):
        active = torch.sqrt(rs) > stop
        if not bool(active.any()):
            break
        Ap = normal(p)
        pAp = _dot(p, Ap).real
        alpha = torch.where(active & (pAp > 0), rs / torch.where(pAp > 0, pAp, torch.ones_like(pAp)),
                            torch.zeros_like(rs))
        x = x + alpha.reshape(shape).to(x.dtype) * p
        r = r - alpha.reshape(shape).to(r.dtype) * Ap
        rs_new = _dot(r, r).real
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = r + beta.reshape(shape).to(p.dtype) * p
        rs = rs_new
    return x


def data_consistency(op: LinearOperator, x: torch.Tensor, x_mean: torch.Tensor, y: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Complex data consistency of Algorithms 3 and 4: project both x and x_mean onto the measurements y."""
    return op.project(x, y), op.project(x_mean, y)


def data_consistency_real(op: LinearOperator, x: torch.Tensor, y: torch.Tensor,
                          x_mean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-valued data consistency of Algorithm 2: x <- Re(P(x)), x_mean <- Re(P(.)).

    With ``x_mean=None`` (the original's behaviour, kept for the faithful mode) x_mean is recomputed by
    projecting the already-projected x, and the predictor/corrector x_mean is discarded; given an
    ``x_mean``, that one is projected instead.
    """
    x = torch.real(op.project(x, y))
    x_mean = torch.real(op.project(x if x_mean is None else x_mean, y))
    return x, x_mean


def kaczmarz_original(x: torch.Tensor, y: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor,
                      lamb: float) -> torch.Tensor:
    """The original's Algorithm 5 step on the coil stack x [B, C, H, W] (faithful mode only).

    It applies A elementwise to the coil images as if each were the image (S_c * x_c), sums the adjoint to
    one image and adds that same update to every coil. See :meth:`SENSE.kaczmarz_coils` for the fix.
    """
    op = SENSE(sens, mask)
    return x + lamb * op.A_H(y - op.A(x))  # [B, 1, H, W] update broadcast onto all C coils
