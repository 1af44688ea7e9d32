"""The SENSE sampler and the phase-demodulated mode of the complex samplers (beyond the paper).

* ``'sense'``: one complex image x [B, 1, H, W] with the SENSE model A x = M F (S_c x) for every coil c
  (Pruessmann et al. 1999), ESPIRiT maps S_c from the measured calibration region. One network call per
  predictor/corrector step whatever the coil count (2 images: real and imaginary part; 1 in phase mode);
  data consistency by ``settings.cg_iters`` conjugate-gradient steps on (A^H A + gamma I) x = A^H y +
  gamma x_hat, warm-started at the step's estimate x_hat (``operators.SENSE.solve``). It is also the
  ``project`` of projecting predictors (the decomposed sampler). With ``settings.noise_weighting = 'auto'``
  the measurement noise s is estimated from the outermost measured k-space (``physics.noise``) and a state
  at noise level sigma is weighted by max(gamma, (s / sigma)^2), the maximum a posteriori weight: noisy data
  no longer pull the late, nearly clean estimates back towards their noise. Clean data (relative noise below
  ``CLEAN_NOISE``) start at ``settings.t0_clean`` when no start was asked for.
* ``settings.complex_mode = 'phase'`` for ``'complex'`` (Algorithm 3), ``'ssos'``/``'hybrid'`` (Algorithms
  4-5, one phase per coil image) and ``'sense'``: the state is the real demodulated image m = Re(x exp(-i
  phi)), phi estimated from the measured k-space centre only (``phase.estimate_phase``). The real-valued prior
  sees real, non-negative anatomy; after every data consistency step m <- Re(P(m exp(i phi)) exp(-i phi))
  (the imaginary residual is dropped); the returned image is P(m exp(i phi)), consistent with the data.
  ``'phase_ri'``: the same demodulation, but the state keeps the imaginary residual m = x exp(-i phi) and
  both its parts go through the prior (the residual is small and anatomy-free, so the prior drives it
  towards zero instead of dropping it; robust where the low-resolution phase misses sharp phase changes).
  The prior leaves a white noise floor in that residual at the last noise levels, so before the final data
  consistency it is smoothed by a Gaussian of ``settings.residual_smoothing`` pixels
  (``phase.smooth_residual``; the embedded config: 1 pixel), and with ``settings.nonnegative`` its real part,
  the magnitude |x| cos(phi_true - phi), is clipped at zero (``phase.clip_magnitude``).
  ``'ri'`` keeps the paper's real/imaginary parts (``algorithms.sample_complex`` etc.).

The sampler table (``score_mri.samplers.table.SAMPLERS``) lists these samplers.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from score_mri.physics.noise import estimate_noise_std, map_weight
from score_mri.physics.operators import SENSE, LinearOperator
from score_mri.physics.phase import (PhaseDemodulated, clip_magnitude, demodulate, estimate_phase, modulate,
                                    smooth_residual)
from score_mri.samplers import algorithms as paper
from score_mri.samplers.algorithms import Algorithm, run_algorithm
from score_mri.samplers.pc_loop import Callback, Result, SamplerSettings

__all__ = ["SenseCG", "sample_sense", "sample_complex", "sample_ssos", "sample_hybrid"]


class SenseCG(LinearOperator):
    """A SENSE operator whose data consistency ``project`` is the regularised CG solve (one image state).

    Outside the coil maps' support (ESPIRiT crops its maps to zero there) A sees nothing, so neither the
    data nor CG constrain the image; the projection sets it to zero there, as a SENSE reconstruction does.
    """

    def __init__(self, op: SENSE, gamma: float, n_iter: int, noise_std: torch.Tensor | None = None):
        self.op, self.gamma, self.n_iter = op, float(gamma), int(n_iter)
        self.mask = op.mask
        self.noise_std = noise_std          # [B] measurement noise per k-space sample, or None (fixed gamma)
        self.weight: float | torch.Tensor = self.gamma
        energy = torch.sum(torch.abs(op.sens) ** 2, dim=1, keepdim=True)          # [B, 1, H, W]
        self.support = (energy > 1e-3 * energy.max()).to(energy.dtype)

    def at_noise_level(self, sigma: float) -> "SenseCG":
        """This operator with the prior estimate weighted for noise level sigma: max(gamma, (s / sigma)^2)
        with s the measurement noise (``noise.map_weight``); itself when no noise level is known."""
        if self.noise_std is None:
            return self
        other = copy.copy(self)
        other.weight = map_weight(self.gamma, self.noise_std, sigma)
        return other

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """mask * fft2c(S_c x)."""
        return self.op.A(x)

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """sum_c conj(S_c) ifft2c(mask * y_c)."""
        return self.op.A_H(y)

    def project(self, x_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``n_iter`` CG steps on (A^H A + gamma I) x = A^H y + gamma x_hat, started at x_hat; 0 off the support
        (gamma: the weight of :meth:`at_noise_level`, else the fixed one)."""
        weight = self.weight
        if isinstance(weight, torch.Tensor):
            weight = weight.to(device=x_hat.device, dtype=x_hat.real.dtype)
        return self.op.solve(x_hat, y, weight, self.n_iter) * self.support

    def restrict(self, sl: slice) -> "SenseCG":
        """The state is one image: every coil slice is the whole operator."""
        return self


@dataclass
class _Problem:
    """What the wrapped algorithms receive as ``op``: the state's operator and, for Algorithm 5, SENSE."""
    state: Any
    sense: SENSE | None = None


@dataclass(frozen=True)
class StateAlgorithm(Algorithm):
    """An :class:`sampling.Algorithm` on a given state operator (SENSE image or demodulated images)."""

    def per_coil_op(self, op: _Problem):
        """The state operator."""
        return op.state

    def post_step(self, op: _Problem, y: torch.Tensor, settings: SamplerSettings):
        """Algorithm 5's Kaczmarz step on the re-modulated coil images, demodulated again."""
        if not self.kaczmarz:
            return None
        base = Algorithm.post_step(self, op.sense, y, settings)
        phi = op.state.phi

        def step(i: int, x: torch.Tensor, x_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if i % settings.m_steps != 0:
                return x, x_mean
            xa, xb = base(i, modulate(x, phi), modulate(x_mean, phi))
            xa, xb = demodulate(xa, phi), demodulate(xb, phi)
            return (xa.real, xb.real) if self.real_valued else (xa, xb)

        return step


SENSE_RI = StateAlgorithm("sense", order="CP", real_valued=False, coil_images=False)
SENSE_PHASE = StateAlgorithm("sense-phase", order="CP", real_valued=True, coil_images=False)
COMPLEX_PHASE = StateAlgorithm("complex-phase", order="CP", real_valued=True, coil_images=False)
SSOS_PHASE = StateAlgorithm("ssos-phase", order="PC", real_valued=True, coil_images=True)
HYBRID_PHASE = StateAlgorithm("hybrid-phase", order="PC", real_valued=True, coil_images=True, kaczmarz=True)
# complex_mode='phase_ri': the demodulated image keeps its imaginary residual; both parts go through the prior
SENSE_PHASE_RI = StateAlgorithm("sense-phase-ri", order="CP", real_valued=False, coil_images=False)
COMPLEX_PHASE_RI = StateAlgorithm("complex-phase-ri", order="CP", real_valued=False, coil_images=False)
SSOS_PHASE_RI = StateAlgorithm("ssos-phase-ri", order="PC", real_valued=False, coil_images=True)
HYBRID_PHASE_RI = StateAlgorithm("hybrid-phase-ri", order="PC", real_valued=False, coil_images=True, kaczmarz=True)
PHASE_ALGORITHMS = {  # sampler -> complex_mode -> record
    "sense": {"phase": SENSE_PHASE, "phase_ri": SENSE_PHASE_RI},
    "complex": {"phase": COMPLEX_PHASE, "phase_ri": COMPLEX_PHASE_RI},
    "ssos": {"phase": SSOS_PHASE, "phase_ri": SSOS_PHASE_RI},
    "hybrid": {"phase": HYBRID_PHASE, "phase_ri": HYBRID_PHASE_RI},
}


def _check(settings: SamplerSettings, what: str) -> None:
    """The new modes have no original counterpart (ValueError with faithful=True)."""
    if settings.faithful:
        raise ValueError(f"{what} is not part of the original code: not available with faithful=True")


def _finish_residual(m: torch.Tensor, settings: SamplerSettings) -> torch.Tensor:
    """The phase modes' final touch on the demodulated image: imaginary residual smoothed by
    ``settings.residual_smoothing`` (phase_ri) and, with ``settings.nonnegative``, the real part (the magnitude
    estimate; all of m in 'phase' mode) clipped at zero."""
    m = smooth_residual(m, settings.residual_smoothing)
    return clip_magnitude(m) if settings.nonnegative else m


def _run_phase(alg: StateAlgorithm, model, base_op, phase_op, y: torch.Tensor, settings: SamplerSettings,
               generator: torch.Generator | None, callback: Callback | None, sense: SENSE | None = None,
               after_dc: bool = False) -> Result:
    """Run ``alg`` on m = Re(x exp(-i phi)) (phase_ri: m = x exp(-i phi)), phi from ``phase_op``'s tapered
    centre; return P(m exp(i phi)) with m finished by :func:`_finish_residual`. ``after_dc``: finish once more
    after that final data consistency (the exact projection puts the measured samples' white noise back into
    the residual; the output then no longer holds the measured k-space exactly)."""
    _check(settings, f"complex_mode={settings.complex_mode!r}")
    phi = estimate_phase(phase_op, y, base_op.mask)
    state = PhaseDemodulated(base_op, phi)
    result = run_algorithm(alg, model, _Problem(state, sense), y, settings, generator=generator, callback=callback)
    final = state.at_noise_level(settings.sigma_min)  # the last estimate's noise level (noise-weighted SENSE)
    x = final.remodulate(_finish_residual(result.x, settings), y)
    if after_dc and settings.complex_mode == "phase_ri":
        x = modulate(_finish_residual(demodulate(x, phi), settings), phi)
    return Result(x, result.network_calls)


CLEAN_NOISE = 0.005  # relative noise (see relative_noise) below which data count as clean


def measurement_noise(op: SENSE, y: torch.Tensor, settings: SamplerSettings) -> torch.Tensor | None:
    """The noise level that weights the data consistency: estimated from y with ``settings.noise_weighting``
    'auto' (``noise.estimate_noise_std``), None when 'off' or when the operator has no Cartesian mask."""
    if settings.noise_weighting == "off" or op.mask is None:
        return None
    return estimate_noise_std(y, op.mask)


def relative_noise(op: SENSE, y: torch.Tensor, noise_std: torch.Tensor) -> float:
    """The largest, over the batch, noise std per k-space sample over the peak of the zero-filled SENSE image."""
    peak = torch.abs(op.A_H(y)).flatten(1).amax(dim=1).double().cpu()             # [B]
    ratio = noise_std.double().cpu() / torch.clamp(peak, min=torch.finfo(torch.float64).tiny)
    return float(ratio.max())


def start_settings(settings: SamplerSettings, relative: float | None) -> SamplerSettings:
    """``settings`` with t0 = ``settings.t0_clean`` where no start was set and the data are clean (``relative``
    noise below ``CLEAN_NOISE``; None: not estimated). Measured on this sampler (README, "Noise weighting and
    the clean-data start"): the start nearer the data gains on clean data and loses on noisy data, whose noise
    it would carry into the first steps."""
    if settings.t0 is not None or settings.t0_clean is None or relative is None:
        return settings
    return settings.replace(t0=settings.t0_clean) if relative < CLEAN_NOISE else settings


def sample_sense(model, op: SENSE, y: torch.Tensor, settings: SamplerSettings, *,
                 generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
    """SENSE sampler: one complex image [B, 1, H, W], CG data consistency, one network call per step; with
    noise weighting, ``Result.info`` holds the noise estimate (y's units, largest over the batch), the relative
    noise and the start taken."""
    if not isinstance(op, SENSE):
        raise ValueError("the SENSE sampler needs a SENSE operator (coil maps and mask)")
    _check(settings, "the SENSE sampler")
    noise_std = measurement_noise(op, y, settings)
    relative = None if noise_std is None else relative_noise(op, y, noise_std)
    settings = start_settings(settings, relative)
    cg = SenseCG(op, settings.gamma, settings.cg_iters, noise_std=noise_std)
    if settings.complex_mode != "ri":
        result = _run_phase(PHASE_ALGORITHMS["sense"][settings.complex_mode], model, cg, op, y, settings,
                            generator, callback)
    else:
        result = run_algorithm(SENSE_RI, model, _Problem(cg), y, settings, generator=generator, callback=callback)
    if noise_std is not None:
        result.info.update(noise_std=float(noise_std.max()), relative_noise=relative, t0=settings.t0)
    return result


def _with_phase_modes(name: str, paper: Callable[..., Result], doc: str) -> Callable[..., Result]:
    """The sampler ``name``: the paper's ``paper`` for complex_mode 'ri', else its phase-demodulated variant.

    The phase modes act on the per-coil Cartesian operator (the Cartesian part of a SENSE operator, whose
    maps then serve Algorithm 5's Kaczmarz step).
    """

    def sample(model, op, y: torch.Tensor, settings: SamplerSettings, *, generator: torch.Generator | None = None,
               callback: Callback | None = None) -> Result:
        if settings.complex_mode == "ri":
            return paper(model, op, y, settings, generator=generator, callback=callback)
        alg = PHASE_ALGORITHMS[name][settings.complex_mode]
        if alg.kaczmarz and not isinstance(op, SENSE):
            raise ValueError("Algorithm 5 needs a SENSE operator (coil maps and mask)")
        cart = op.fourier if isinstance(op, SENSE) else op
        return _run_phase(alg, model, cart, cart, y, settings, generator, callback,
                          sense=op if alg.kaczmarz else None, after_dc=name == "complex" and settings.finish_after_dc)

    sample.__name__, sample.__doc__ = f"sample_{name}", doc
    return sample


sample_complex = _with_phase_modes(
    "complex", paper.sample_complex, "Algorithm 3; phase modes: the prior on the demodulated image.")
sample_ssos = _with_phase_modes(
    "ssos", paper.sample_ssos, "Algorithm 4; phase modes: each coil image demodulated by its own phase.")
sample_hybrid = _with_phase_modes(
    "hybrid", paper.sample_hybrid, "Algorithm 5; phase modes: Kaczmarz step on the re-modulated coil images.")

