"""The original's sampler builders (``get_pc_sampler``, ``get_pc_fouriercs_*``): thin wrappers over the samplers.

Keyword-only additions: generator, faithful, callback, t0, max_batch. With ``faithful=True`` they reproduce the
original's numerics and random-draw order.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from models import utils as mutils
from score_mri import sde as sde_lib
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
from score_mri.samplers.algorithms import COMPLEX, HYBRID, REAL, SSOS, Algorithm, run_algorithm
from score_mri.samplers.pc_loop import (Callback, SamplerSettings, CountingScore, from_prior, make_generator, run_loop,
                                        sigma_start, start_noise, make_steps, time_grid)

__all__ = ["get_sampling_fn", "get_pc_sampler", "get_pc_fouriercs_fast", "get_pc_fouriercs_RI",
           "get_pc_fouriercs_RI_PI_SSOS", "get_pc_fouriercs_RI_coil_SENSE"]


def _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, denoise, eps,
                      faithful, t0, max_batch, **extra) -> SamplerSettings:
    """SamplerSettings from a builder's arguments (ValueError on bad values)."""
    return SamplerSettings(N=sde.N, predictor=predictor, corrector=corrector, snr=snr, n_steps=n_steps,
                           sigma_min=getattr(sde, "sigma_min", 0.01), sigma_max=getattr(sde, "sigma_max", 378.),
                           eps=eps, t0=None if t0 is None else float(t0), denoise=denoise,
                           probability_flow=probability_flow, continuous=continuous, faithful=faithful,
                           max_batch=max_batch, **extra)


def get_sampling_fn(config, sde: sde_lib.SDE, shape: Sequence[int], inverse_scaler: Callable, eps: float, *,
                    generator: torch.Generator | None = None, faithful: bool = False,
                    callback: Callback | None = None) -> Callable:
    """Unconditional PC sampler (Algorithm 1) configured from ``config.sampling`` (as score_sde_pytorch)."""
    if config.sampling.method.lower() != "pc":
        raise ValueError(f"sampler {config.sampling.method!r} not supported (only 'pc')")
    return get_pc_sampler(sde, shape, config.sampling.predictor.lower(), config.sampling.corrector.lower(),
                          inverse_scaler, config.sampling.snr, n_steps=config.sampling.n_steps_each,
                          probability_flow=config.sampling.probability_flow,
                          continuous=config.training.continuous, denoise=config.sampling.noise_removal,
                          eps=eps, device=mutils.config_device(config), generator=generator, faithful=faithful,
                          callback=callback)


def get_pc_sampler(sde: sde_lib.SDE, shape: Sequence[int], predictor, corrector, inverse_scaler: Callable,
                   snr: float, n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                   denoise: bool = True, eps: float = 1e-3, device=None, *,
                   generator: torch.Generator | None = None, faithful: bool = False,
                   callback: Callback | None = None, t0: float | None = None,
                   max_batch: int | None = None) -> Callable:
    """Algorithm 1: unconditional PC sampling (corrector then predictor); returns fn(model, x0=None).

    fn returns (samples [shape], number of network evaluations). ``device`` defaults to the model's.
    With ``t0 < 1``, fn needs ``x0``: sampling starts from x0 + sigma(t0) z (SDEdit-style).
    """
    settings = _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, denoise,
                                 eps, faithful, t0, max_batch)

    def pc_sampler(model: torch.nn.Module, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        dev = device if device is not None else next(model.parameters()).device
        g = make_generator(generator, torch.device(dev))
        score_fn = CountingScore(mutils.get_score_fn(sde, model, train=False, continuous=continuous), max_batch)
        with torch.no_grad():
            like = torch.empty((), device=dev) if x0 is None else x0.to(dev)
            x = start_noise(shape, g, like, sigma_start(settings, sde), is_complex=False)  # [B, ch, H, W]
            if not from_prior(settings):
                if x0 is None:
                    raise ValueError("t0 < 1 needs a starting image x0")
                x = x0.to(dev) + x
            use_grid = isinstance(sde, sde_lib.VESDE) and (not faithful or not from_prior(settings))
            x, x_mean = run_loop(x, steps=make_steps(settings, sde, score_fn, g, "CP"),
                                 timesteps=time_grid(settings, torch.device(dev)),
                                 dc=lambda x, x_mean, sl, sigma: (x, x_mean), generator=g, faithful=faithful,
                                 split=False, use_grid=use_grid, channels=shape[1], callback=callback)
            return inverse_scaler(x_mean if denoise else x), sde.N * (n_steps + 1)

    return pc_sampler


def _wrap(alg: Algorithm, settings: SamplerSettings, sde, inverse_scaler: Callable,
          generator: torch.Generator | None, callback: Callback | None) -> Callable:
    """fn(model, op, y, data) -> inverse_scaler(state) for the builders below."""

    def fn(model: torch.nn.Module, op, y: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        y = torch.broadcast_to(y, data.shape)  # the original's builders take the batch shape from ``data``
        result = run_algorithm(alg, model, op, y, settings, generator=generator, callback=callback, sde=sde)
        return inverse_scaler(result.x)

    return fn


def get_pc_fouriercs_fast(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                          n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                          denoise: bool = True, eps: float = 1e-5, *, generator: torch.Generator | None = None,
                          faithful: bool = False, callback: Callback | None = None,
                          t0: float | None = None, max_batch: int | None = None) -> Callable:
    """Algorithm 2 (real-valued images): returns fn(model, data, mask, Fy) -> image [B, 1, H, W]."""
    fn = _wrap(REAL, _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous,
                                       denoise, eps, faithful, t0, max_batch), sde, inverse_scaler, generator, callback)
    return lambda model, data, mask, Fy: fn(model, SingleCoilCartesian(mask), Fy, data)


def get_pc_fouriercs_RI(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                        n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                        denoise: bool = True, eps: float = 1e-5, *, generator: torch.Generator | None = None,
                        faithful: bool = False, callback: Callback | None = None,
                        t0: float | None = None, max_batch: int | None = None) -> Callable:
    """Algorithm 3 (complex single-coil): returns fn(model, data, mask, Fy) -> complex image [B, 1, H, W]."""
    fn = _wrap(COMPLEX, _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous,
                                          denoise, eps, faithful, t0, max_batch), sde, inverse_scaler, generator,
               callback)
    return lambda model, data, mask, Fy: fn(model, SingleCoilCartesian(mask), Fy, data)


def get_pc_fouriercs_RI_PI_SSOS(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                                n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                                denoise: bool = True, eps: float = 1e-5, mask: torch.Tensor | None = None, *,
                                generator: torch.Generator | None = None, faithful: bool = False,
                                callback: Callback | None = None, t0: float | None = None,
                                batch_coils: bool = True, max_batch: int | None = None) -> Callable:
    """Algorithm 4 (multi-coil, separate coils): returns fn(model, data, y) -> coil images [B, C, H, W]."""
    if mask is None:
        raise ValueError("the multi-coil samplers need a sampling mask")
    fn = _wrap(SSOS, _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous,
                                       denoise, eps, faithful, t0, max_batch, batch_coils=batch_coils), sde,
               inverse_scaler, generator, callback)
    return lambda model, data, y: fn(model, MultiCoilCartesian(mask), y, data)


def get_pc_fouriercs_RI_coil_SENSE(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable,
                                   snr: float, n_steps: int = 1, lamb_schedule=None,
                                   probability_flow: bool = False, continuous: bool = False,
                                   denoise: bool = True, eps: float = 1e-5, sens: torch.Tensor | None = None,
                                   mask: torch.Tensor | None = None, m_steps: int = 10, *,
                                   generator: torch.Generator | None = None, faithful: bool = False,
                                   callback: Callback | None = None, t0: float | None = None,
                                   batch_coils: bool = True, max_batch: int | None = None) -> Callable:
    """Algorithm 5 (hybrid): returns fn(model, data, y) -> coil images [B, C, H, W].

    Fixed mode: x_c += S_c lamb A^H(y - A S^H x) with lambda_i = schedule(i * total / N); faithful: the
    original's broadcast step with lambda_i = schedule(i) (``operators.kaczmarz_original``).
    """
    if sens is None:
        raise ValueError("Algorithm 5 needs coil sensitivity maps (sens)")
    if mask is None:
        raise ValueError("the multi-coil samplers need a sampling mask")
    fn = _wrap(HYBRID, _builder_settings(sde, predictor, corrector, snr, n_steps, probability_flow, continuous,
                                         denoise, eps, faithful, t0, max_batch, batch_coils=batch_coils,
                                         m_steps=m_steps, lamb_schedule=lamb_schedule), sde, inverse_scaler,
               generator, callback)
    return lambda model, data, y: fn(model, SENSE(sens, mask), y, data)
