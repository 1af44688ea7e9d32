"""Predictor-corrector sampling with k-space data consistency (Chung & Ye 2022, Algorithms 1-5).

Every algorithm runs through one loop, :func:`pc_loop.run_loop`: at each time t_i it applies the steps of a fixed
order (corrector then predictor for Algorithms 1-3, predictor then corrector for 4-5), each followed by the
algorithm's data consistency, plus an optional per-iteration step (Algorithm 5's SENSE Kaczmarz step).
Complex images and coils are reshaped into batch entries of the real-valued, one-channel score network: a
state x [B, C, H, W] (C coils, complex) becomes [B*C*2, 1, H, W].

Samplers share one signature, ``sampler(model, op, y, settings, *, generator=None, callback=None) ->
Result``, with ``op`` the measurement operator (``operators.py``), ``y`` the measured k-space and
``settings`` a frozen :class:`SamplerSettings`; they are registered by name in :data:`SAMPLERS`
('real', 'complex', 'ssos', 'hybrid'). What distinguishes the algorithms (start, data consistency, step
order, extra step) is an :class:`Algorithm` record. The original's builders ``get_pc_fouriercs_*`` remain
as thin wrappers.

Two modes:

* fixed (default): one network call per predictor or corrector step for all coils and both real and
  imaginary parts; Langevin step size per batch element (so a batched call equals per-coil calls); the
  reverse-diffusion step uses the loop's own time grid, G_i^2 = sigma(t_i)^2 - sigma(t_{i+1})^2; a
  data-consistent start; Algorithm 2 projects the predictor's x_mean; Algorithm 5 takes the SENSE step on
  the coil-combined image (``operators.SENSE.kaczmarz_coils``) with the lambda schedule stretched over N.
  Noise layout: per iteration and per step (in the step order) one draw of shape [n_draws, B, C, P, H, W]
  (P = 2 for complex data: real, imaginary), n_draws = 1 for a predictor and n_steps for Langevin.
* ``faithful=True``: the original's numerics and random-draw order: one network call per coil and per
  real/imaginary part, Langevin step from batch-mean norms, SMLD discretisation on the SDE's grid, the
  original's starts and Kaczmarz step, lambda over the schedule's own total.

With ``settings.nonnegative`` (beyond the paper; not with ``faithful``) Algorithm 2, whose state is a
magnitude image, ends with one more projection pair: clip at zero, then its data consistency once more.

``t0 < 1`` starts from the data-consistent zero-filled estimate noised to sigma(t0) (Come-Closer-Diffuse-
Faster, Chung et al. 2022) and runs N steps from t0 to eps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from score_mri import sde as sde_lib
from models import utils as mutils
from score_mri.physics.operators import (SENSE, coil_slice, MultiCoilCartesian, SingleCoilCartesian, data_consistency, data_consistency_real,
                       kaczmarz_original)
from score_mri.samplers.predictors import randn, real_dtype
from score_mri.samplers.pc_loop import (Callback, DataConsistency, PostStep, Project, Result, SamplerSettings,
                                        CountingScore, from_prior, make_generator, run_loop, sigma_start, start_noise,
                                        make_steps, noise_levels, time_grid)
from score_mri.utils import lambda_schedule_linear

__all__ = ["Algorithm", "run_algorithm", "REAL", "COMPLEX", "SSOS", "HYBRID", "sample_real", "sample_complex",
           "sample_ssos", "sample_hybrid"]

# ----------------------------------------------------------------------------------------------------------
# Algorithms 2-5
# ----------------------------------------------------------------------------------------------------------

def _at(op, sl: slice, sigma: float | None):
    """The operator of the coils ``sl`` for a state at noise level sigma (``LinearOperator.at_noise_level``:
    only operators that weight the prior's estimate by the measurement noise depend on it)."""
    restricted = op.restrict(sl)
    return restricted if sigma is None else restricted.at_noise_level(sigma)


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes one of the paper's algorithms inside the shared loop."""
    name: str
    order: str                      # 'CP': corrector then predictor (Algorithms 1-3); 'PC' (4-5)
    real_valued: bool               # the state is a real image (Algorithm 2)
    coil_images: bool               # the state holds one image per coil (Algorithms 4-5)
    kaczmarz: bool = False          # the SENSE step every m_steps iterations (Algorithm 5)
    magnitude: bool = False         # the state is a magnitude image, non-negative (Algorithm 2)

    def per_coil_op(self, op):
        """The operator acting on the state (coil images take the Cartesian part of a SENSE operator)."""
        return op.fourier if isinstance(op, SENSE) and self.coil_images else op

    def start(self, op, y: torch.Tensor, settings: SamplerSettings, sigma: float, g: torch.Generator):
        """Noise shaped like the image A^H y, made data-consistent (faithful: the original's starts)."""
        shape = tuple(op.A_H(y).shape)
        if self.coil_images and settings.faithful and from_prior(settings):
            # The original: pure complex noise per coil, real part drawn first, no data consistency.
            dtype = real_dtype(y)
            x_r = randn(shape, g, dtype, y.device) * sigma
            x_i = randn(shape, g, dtype, y.device) * sigma
            return torch.complex(x_r, x_i)                                   # [B, C, H, W]
        complex_noise = not self.real_valued and not (settings.faithful and not self.coil_images)
        x = op.project(start_noise(shape, g, y, sigma, complex_noise), y)
        return torch.real(x) if self.real_valued else x

    def dc(self, op, y: torch.Tensor, settings: SamplerSettings) -> DataConsistency:
        """Data consistency of (x, x_mean) restricted to the coils ``sl``."""
        if self.real_valued:  # faithful: x_mean re-projected from the projected x (the original's quirk)
            return lambda x, x_mean, sl, sigma=None: data_consistency_real(
                _at(op, sl, sigma), x, coil_slice(y, sl), x_mean=None if settings.faithful else x_mean)
        return lambda x, x_mean, sl, sigma=None: data_consistency(_at(op, sl, sigma), x, x_mean, coil_slice(y, sl))

    def project(self, op, y: torch.Tensor) -> Project:
        """Data consistency of a clean estimate (for projecting predictors)."""
        if self.real_valued:
            return lambda x0, sl, sigma=None: torch.real(_at(op, sl, sigma).project(x0, coil_slice(y, sl)))
        return lambda x0, sl, sigma=None: _at(op, sl, sigma).project(x0, coil_slice(y, sl))

    def finish(self, op, y: torch.Tensor, settings: SamplerSettings, x: torch.Tensor) -> torch.Tensor:
        """The returned image: DC(max(x, 0)) with ``settings.nonnegative`` (magnitude states, not faithful), else x."""
        if not (self.magnitude and settings.nonnegative and not settings.faithful):
            return x
        return self.project(op, y)(x.clamp_min(0), slice(None))

    def post_step(self, op, y: torch.Tensor, settings: SamplerSettings) -> PostStep | None:
        """Algorithm 5's Kaczmarz step every m_steps iterations; None for the other algorithms."""
        if not self.kaczmarz:
            return None
        if not isinstance(op, SENSE):
            raise ValueError("Algorithm 5 needs a SENSE operator (coil maps and mask)")
        schedule = settings.lamb_schedule or lambda_schedule_linear(1.0, 0.2)
        total = getattr(schedule, "total", settings.N)

        def kaczmarz(i: int, x: torch.Tensor, x_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if i % settings.m_steps != 0:
                return x, x_mean
            if settings.faithful:
                lamb = schedule.get_current_lambda(i)
                return (kaczmarz_original(x, y, op.sens, op.mask, lamb),
                        kaczmarz_original(x_mean, y, op.sens, op.mask, lamb))
            lamb = schedule.get_current_lambda(i * total / settings.N)  # schedule stretched over N
            return op.kaczmarz_coils(x, y, lamb), op.kaczmarz_coils(x_mean, y, lamb)

        return kaczmarz


def run_algorithm(alg: Algorithm, model: torch.nn.Module, op, y: torch.Tensor, settings: SamplerSettings, *,
                  generator: torch.Generator | None = None, callback: Callback | None = None,
                  sde: sde_lib.SDE | None = None) -> Result:
    """Sample the posterior of ``alg`` given measurements y = A x (+ noise); ``sde`` overrides the settings'."""
    sde = settings.make_sde() if sde is None else sde
    if not from_prior(settings) and not isinstance(sde, sde_lib.VESDE):
        raise ValueError("t0 < T needs the VE-SDE (sigma(t0) noise level)")
    g = make_generator(generator, y.device)
    score_fn = CountingScore(mutils.get_score_fn(sde, model, train=False, continuous=settings.continuous),
                              settings.max_batch, flip_cycle=settings.flips_network_input)
    state_op = alg.per_coil_op(op)
    use_grid = isinstance(sde, sde_lib.VESDE) and (not settings.faithful or not from_prior(settings))
    split = settings.faithful or (alg.coil_images and not settings.batch_coils)
    with torch.no_grad():
        x = alg.start(state_op, y, settings, sigma_start(settings, sde), g)
        timesteps = time_grid(settings, y.device)
        x, x_mean = run_loop(x, steps=make_steps(settings, sde, score_fn, g, alg.order),
                             timesteps=timesteps, dc=alg.dc(state_op, y, settings),
                             project=alg.project(state_op, y), generator=g, faithful=settings.faithful,
                             split=split, use_grid=use_grid, post_step=alg.post_step(op, y, settings),
                             callback=callback, sigmas=noise_levels(sde, timesteps))
        x_out = alg.finish(state_op, y, settings, x_mean if settings.denoise else x)
    return Result(x_out, score_fn.calls)


REAL = Algorithm("real", order="CP", real_valued=True, coil_images=False, magnitude=True)
COMPLEX = Algorithm("complex", order="CP", real_valued=False, coil_images=False)
SSOS = Algorithm("ssos", order="PC", real_valued=False, coil_images=True)
HYBRID = Algorithm("hybrid", order="PC", real_valued=False, coil_images=True, kaczmarz=True)


def sample_real(model, op: SingleCoilCartesian, y: torch.Tensor, settings: SamplerSettings, *,
                generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
    """Algorithm 2 (real-valued): corrector, real data consistency, predictor, real data consistency."""
    return run_algorithm(REAL, model, op, y, settings, generator=generator, callback=callback)


def sample_complex(model, op: SingleCoilCartesian, y: torch.Tensor, settings: SamplerSettings, *,
                   generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
    """Algorithm 3 (complex single-coil): real and imaginary parts through the prior, complex DC."""
    return run_algorithm(COMPLEX, model, op, y, settings, generator=generator, callback=callback)


def sample_ssos(model, op: MultiCoilCartesian, y: torch.Tensor, settings: SamplerSettings, *,
                generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
    """Algorithm 4 (multi-coil, separate coils): coil images [B, C, H, W]; combine with RSS."""
    return run_algorithm(SSOS, model, op, y, settings, generator=generator, callback=callback)


def sample_hybrid(model, op: SENSE, y: torch.Tensor, settings: SamplerSettings, *,
                  generator: torch.Generator | None = None, callback: Callback | None = None) -> Result:
    """Algorithm 5 (hybrid): Algorithm 4 plus a SENSE Kaczmarz step every ``settings.m_steps`` iterations."""
    return run_algorithm(HYBRID, model, op, y, settings, generator=generator, callback=callback)
