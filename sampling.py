"""Predictor-corrector samplers of score-MRI (Chung & Ye 2022, Algorithms 1-5).

Every algorithm runs through one loop, :func:`_pc_loop`: at each time t_i it applies the steps of a
fixed order (corrector then predictor for Algorithms 1-3, predictor then corrector for 4-5), each step
followed by a data-consistency callable, plus an optional per-iteration step (the SENSE Kaczmarz step of
Algorithm 5). The builders ``get_pc_*`` only supply the start, the order, the data consistency and the
complex/coil handling. Complex images and coils are reshaped into batch entries of the real-valued,
one-channel score network: a state x [B, C, H, W] (C coils, complex) becomes [B*C*2, 1, H, W].

Two modes:

* fixed (default): one network call per predictor or corrector step for all coils and both real and
  imaginary parts; Langevin step size per batch element (so a batched call equals per-coil calls); the
  reverse-diffusion step uses the loop's own time grid, G_i^2 = sigma(t_i)^2 - sigma(t_{i+1})^2; a
  data-consistent start; Algorithm 2 projects the predictor's x_mean; Algorithm 5 takes the SENSE step on
  the coil-combined image (``utils.SENSE.kaczmarz_coils``) with the lambda schedule stretched over N.
  Noise layout: per iteration and per step (in the step order) one draw of shape
  [n_draws, B, C, P, H, W] (P = 2 for complex data: real, imaginary), n_draws = 1 for a predictor and
  n_steps for the Langevin corrector.
* ``faithful=True``: the original's numerics and random-draw order (golden vectors in
  ``reference/sampler_golden.pt``): one network call per coil and per real/imaginary part, Langevin step
  from batch-mean norms, SMLD discretisation on the SDE's grid, the original's starts and Kaczmarz step,
  lambda over the schedule's own total.

Every random number comes from an explicit ``torch.Generator``; the global RNG is never used.
``max_batch`` evaluates the network in chunks (same result, less memory for many coils).
``t0 < 1`` starts from the data-consistent zero-filled estimate noised to sigma(t0) (Come-Closer-
Diffuse-Faster, Chung et al. 2022) and runs N steps from t0 to eps: few-step reconstruction.
"""
from __future__ import annotations

import abc
from typing import Callable, Sequence

import torch

import sde_lib
from models import utils as mutils
from utils import (SENSE, MultiCoilCartesian, SingleCoilCartesian, data_consistency, data_consistency_real,
                   kaczmarz_original, lambda_schedule_linear)

__all__ = [
    "Predictor", "Corrector", "ReverseDiffusionPredictor", "AncestralSamplingPredictor", "EulerMaruyamaPredictor", "NonePredictor",
    "LangevinCorrector", "NoneCorrector", "register_predictor", "register_corrector", "get_predictor",
    "get_corrector", "get_sampling_fn", "get_pc_sampler", "get_pc_fouriercs_fast", "get_pc_fouriercs_RI",
    "get_pc_fouriercs_RI_PI_SSOS", "get_pc_fouriercs_RI_coil_SENSE",
]

Callback = Callable[[int, int, torch.Tensor], None]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_PREDICTORS: dict[str, type] = {}
_CORRECTORS: dict[str, type] = {}


def _register(registry: dict[str, type], kind: str, cls=None, name: str | None = None):
    """Class decorator adding ``cls`` to ``registry`` under ``name`` (default: the class name)."""

    def add(cls):
        key = cls.__name__ if name is None else name
        if key in registry:
            raise ValueError(f"Already registered {kind} with name: {key}")
        registry[key] = cls
        return cls

    return add if cls is None else add(cls)


def register_predictor(cls=None, *, name: str | None = None):
    """Decorator registering a predictor class (score_sde_pytorch API)."""
    return _register(_PREDICTORS, "predictor", cls, name)


def register_corrector(cls=None, *, name: str | None = None):
    """Decorator registering a corrector class (score_sde_pytorch API)."""
    return _register(_CORRECTORS, "corrector", cls, name)


def get_predictor(name: str) -> type:
    """The predictor class registered under ``name`` ('reverse_diffusion', 'euler_maruyama', 'none')."""
    try:
        return _PREDICTORS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown predictor {name!r}; expected one of {', '.join(sorted(_PREDICTORS))}") from None


def get_corrector(name: str) -> type:
    """The corrector class registered under ``name`` ('langevin', 'none')."""
    try:
        return _CORRECTORS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown corrector {name!r}; expected one of {', '.join(sorted(_CORRECTORS))}") from None


# ----------------------------------------------------------------------------------------------------------
# Noise and small tensor helpers
# ----------------------------------------------------------------------------------------------------------

def _randn(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    """Standard normal noise from ``generator``, drawn on the generator's device and moved to ``device``."""
    if generator is None:
        raise ValueError("sampling noise needs an explicit torch.Generator (the global RNG is never used)")
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device).to(device)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of x's shape, real dtype and device."""
    return _randn(x.shape, generator, x.dtype, x.device)


def _expand(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """Per-sample values [n] -> [n, 1, ..., 1] broadcasting against x [n, ...]."""
    if isinstance(v, torch.Tensor) and v.dim() == 1:
        return v.reshape(-1, *([1] * (x.dim() - 1)))
    return v


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for complex64/float32, float64 for complex128/float64."""
    return x.real.dtype if x.is_complex() else x.dtype


def _sigma_next(sde, t_next: torch.Tensor) -> torch.Tensor:
    """sigma(t_next), with t_next <= 0 standing for the clean data (sigma = 0, the SMLD sigma_{-1})."""
    sigma = sde.marginal_prob(torch.zeros_like(t_next), t_next)[1]
    return torch.where(t_next > 0, sigma, torch.zeros_like(sigma))


# ----------------------------------------------------------------------------------------------------------
# Predictors and correctors (Song et al. 2021, Algorithms 2-3; Chung & Ye 2022, Algorithm 1)
# ----------------------------------------------------------------------------------------------------------

class Predictor(abc.ABC):
    """One step of the reverse-time SDE; ``n_noise`` standard-normal draws of x's shape per update."""

    n_noise = 1

    def __init__(self, sde: sde_lib.SDE, score_fn: ScoreFn, probability_flow: bool = False):
        super().__init__()
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.rsde = sde.reverse(score_fn, probability_flow)

    @abc.abstractmethod
    def update_fn(self, x: torch.Tensor, t: torch.Tensor, *, z: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, t_next: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step x [n, ...] at times t [n] to (x, x_mean); noise ``z`` [n, ...] or drawn from ``generator``.

        ``t_next`` [n]: the next time of the sampler's grid (<= 0: clean data); None: the SDE's own grid.
        """


class Corrector(abc.ABC):
    """``n_steps`` MCMC steps at fixed t; ``faithful`` keeps the original's batch-mean step size."""

    def __init__(self, sde: sde_lib.SDE, score_fn: ScoreFn, snr: float, n_steps: int, *, faithful: bool = False):
        super().__init__()
        self.sde = sde
        self.score_fn = score_fn
        self.snr = snr
        self.n_steps = n_steps
        self.faithful = faithful

    @property
    def n_noise(self) -> int:
        """Standard-normal draws of x's shape per update."""
        return self.n_steps

    @abc.abstractmethod
    def update_fn(self, x: torch.Tensor, t: torch.Tensor, *, z: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct x [n, ...] at times t [n]; noise ``z`` [n_steps, n, ...] or drawn from ``generator``."""


@register_predictor(name="reverse_diffusion")
class ReverseDiffusionPredictor(Predictor):
    """Reverse diffusion (ancestral SMLD) step: x_mean = x + G^2 s(x, t), x = x_mean + G z."""

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One reverse-diffusion step; G_i^2 = sigma_i^2 - sigma_{i+1}^2 on the grid given by ``t_next``."""
        if t_next is None:
            f, G = self.rsde.discretize(x, t)  # SMLD on the SDE's grid: G = sqrt(sigma_i^2 - sigma_{i-1}^2)
            x_mean = x - f
        else:
            G2 = self.sde.marginal_prob(torch.zeros_like(t), t)[1] ** 2 - _sigma_next(self.sde, t_next) ** 2
            weight = 0.5 if self.probability_flow else 1.0
            x_mean = x + _expand(G2, x) * self.score_fn(x, t) * weight
            G = torch.zeros_like(G2) if self.probability_flow else torch.sqrt(G2)
        z = _randn_like(x, generator) if z is None else z
        x = x_mean + _expand(G, x) * z
        return x, x_mean


@register_predictor(name="ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """VE ancestral step (score_sde_pytorch; Ho et al. 2020 posterior for the VE chain).

    x_mean = x + (sigma_i^2 - sigma_{i+1}^2) s(x, t), x = x_mean + sqrt(sigma_{i+1}^2 (sigma_i^2 -
    sigma_{i+1}^2) / sigma_i^2) z. Unlike the reverse-diffusion step, its injected noise shrinks with
    the step, so the variance falls to sigma_{i+1}^2 even for large steps: the predictor for few-step runs.
    """

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One ancestral step towards sigma(t_next) (None: the SDE's adjacent discrete sigma)."""
        if not isinstance(self.sde, sde_lib.VESDE):
            raise NotImplementedError("ancestral sampling is implemented for the VE-SDE only")
        if t_next is None:  # the SDE's discrete grid, as score_sde_pytorch
            sigma, sigma_next = self.sde.adjacent_sigmas(t)
        else:
            sigma, sigma_next = self.sde.marginal_prob(torch.zeros_like(t), t)[1], _sigma_next(self.sde, t_next)
        G2 = sigma ** 2 - sigma_next ** 2
        x_mean = x + _expand(G2, x) * self.score_fn(x, t)
        std = torch.sqrt(sigma_next ** 2 * G2 / sigma ** 2)
        z = _randn_like(x, generator) if z is None else z
        return x_mean + _expand(std, x) * z, x_mean


@register_predictor(name="euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """Euler-Maruyama step of the reverse SDE: x_mean = x + f_rev dt, x = x_mean + g sqrt(-dt) z."""

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One Euler-Maruyama step with dt = -1/N (or t_next - t on the sampler's grid)."""
        dt = -1.0 / self.rsde.N if t_next is None else _expand(torch.clamp(t_next, min=0) - t, x)
        z = _randn_like(x, generator) if z is None else z
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        x = x_mean + _expand(diffusion, x) * (-dt) ** 0.5 * z
        return x, x_mean


@register_predictor(name="none")
class NonePredictor(Predictor):
    """No predictor step (corrector-only sampling)."""

    n_noise = 0

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """Return x unchanged."""
        return x, x


@register_corrector(name="langevin")
class LangevinCorrector(Corrector):
    """Langevin MCMC: step = 2 (snr ||z|| / ||s||)^2, x_mean = x + step s, x = x_mean + sqrt(2 step) z."""

    def update_fn(self, x, t, *, z=None, generator=None):
        """``n_steps`` Langevin steps; norms per batch element (fixed) or batch means (``faithful``)."""
        alpha = torch.ones_like(t)  # VE-SDE
        x_mean = x
        for k in range(self.n_steps):
            grad = self.score_fn(x, t)
            noise = _randn_like(x, generator) if z is None else z[k]
            grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1)  # [n]
            noise_norm = torch.norm(noise.reshape(noise.shape[0], -1), dim=-1)  # [n]
            if self.faithful:
                # The original: one step size for the whole batch, from the batch-mean norms.
                grad_norm, noise_norm = grad_norm.mean(), noise_norm.mean()
            step_size = (self.snr * noise_norm / grad_norm) ** 2 * 2 * alpha  # [n]
            x_mean = x + _expand(step_size, x) * grad
            x = x_mean + _expand(torch.sqrt(step_size * 2), x) * noise
        return x, x_mean


@register_corrector(name="none")
class NoneCorrector(Corrector):
    """No corrector step."""

    @property
    def n_noise(self) -> int:
        """No draws."""
        return 0

    def update_fn(self, x, t, *, z=None, generator=None):
        """Return x unchanged."""
        return x, x


# ----------------------------------------------------------------------------------------------------------
# The predictor-corrector loop
# ----------------------------------------------------------------------------------------------------------

DataConsistency = Callable[[torch.Tensor, torch.Tensor, slice], tuple[torch.Tensor, torch.Tensor]]
PostStep = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _to_parts(x: torch.Tensor) -> torch.Tensor:
    """Complex [B, C, H, W] -> real [B, C, 2, H, W] (real, imaginary); real x -> [B, C, 1, H, W]."""
    return torch.stack([x.real, x.imag], dim=2) if x.is_complex() else x.unsqueeze(2)


def _from_parts(xp: torch.Tensor, is_complex: bool) -> torch.Tensor:
    """Inverse of :func:`_to_parts`."""
    return torch.complex(xp[:, :, 0], xp[:, :, 1]) if is_complex else xp[:, :, 0]


def _apply_step(step, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor | None, z: torch.Tensor | None,
                split_parts: bool, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one predictor/corrector ``step`` on x [B, c, H, W] (real or complex) through the real network.

    The parts (real, imaginary) go as one batch [B*c*P, channels, H, W], or one call per part with
    ``split_parts`` (the original's order: real first). ``z`` [k, B, c, P, H, W] or None (draw inside).
    """
    xp = _to_parts(x)  # [B, c, P, H, W]
    out, out_mean = torch.empty_like(xp), torch.empty_like(xp)
    n_parts = xp.shape[2]
    for ps in ([slice(p, p + 1) for p in range(n_parts)] if split_parts else [slice(None)]):
        x_in = xp[:, :, ps]
        x_net = x_in.reshape(-1, channels, *x_in.shape[-2:])  # [n, channels, H, W]
        vec_t = torch.ones(x_net.shape[0], device=x_net.device) * t
        vec_next = None if t_next is None else torch.ones(x_net.shape[0], device=x_net.device) * t_next
        z_net = None if z is None else z[:, :, :, ps].reshape(z.shape[0], *x_net.shape)  # [k, n, ...]
        x_new, x_new_mean = step(x_net, vec_t, z_net, vec_next)
        out[:, :, ps] = x_new.reshape(x_in.shape)
        out_mean[:, :, ps] = x_new_mean.reshape(x_in.shape)
    return _from_parts(out, x.is_complex()), _from_parts(out_mean, x.is_complex())


def _pc_loop(x: torch.Tensor, *, steps: Sequence, timesteps: torch.Tensor, dc: DataConsistency,
             generator: torch.Generator, faithful: bool, split: bool, use_grid: bool, channels: int = 1,
             post_step: PostStep | None = None, callback: Callback | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictor-corrector loop shared by Algorithms 1-5; returns the final (x, x_mean).

    x [B, C, H, W] (real or complex; C coils, or channels for Algorithm 1). For each time t_i and each
    coil group (all coils, or one coil at a time with ``split``), every step of ``steps`` is followed by
    ``dc(x_group, x_mean_group, coil_slice)``; then ``post_step(i, x, x_mean)`` and ``callback(i, N, x)``.
    ``faithful``: noise drawn inside each call in the original's order; otherwise drawn once per
    iteration and step in the layout [k, B, C, P, H, W], so split and batched runs see the same noise.
    """
    n = len(timesteps)
    x_mean = x.clone()
    n_groups = x.shape[1] if split else 1
    groups = [slice(c, c + 1) for c in range(n_groups)] if split else [slice(None)]
    zero = torch.zeros((), device=timesteps.device, dtype=timesteps.dtype)
    for i in range(n):
        t = timesteps[i]
        t_next = (timesteps[i + 1] if i + 1 < n else zero) if use_grid else None
        zs = [None] * len(steps)
        if not faithful:
            shape = (*x.shape[:2], 2 if x.is_complex() else 1, *x.shape[2:])  # [B, C, P, H, W]
            zs = [_randn((s.n_noise, *shape), generator, _real_dtype(x), x.device) for s in steps]
        if split:
            x_new, x_mean_new = torch.empty_like(x), torch.empty_like(x_mean)
        for sl in groups:
            xg, xg_mean = x[:, sl], x_mean[:, sl]
            for step, z in zip(steps, zs):
                xg, xg_mean = _apply_step(step, xg, t, t_next, None if z is None else z[:, :, sl],
                                          split, channels)
                xg, xg_mean = dc(xg, xg_mean, sl)
            if split:
                x_new[:, sl], x_mean_new[:, sl] = xg, xg_mean
            else:
                x_new, x_mean_new = xg, xg_mean
        x, x_mean = x_new, x_mean_new
        if post_step is not None:
            x, x_mean = post_step(i, x, x_mean)
        if callback is not None:
            callback(i, n, x)
    return x, x_mean


# ----------------------------------------------------------------------------------------------------------
# Builders (the original's public API; keyword-only additions: generator, faithful, callback, t0, ...)
# ----------------------------------------------------------------------------------------------------------

def _chunked(score_fn: ScoreFn, max_batch: int) -> ScoreFn:
    """Evaluate ``score_fn`` in chunks of at most ``max_batch`` samples (same result, less memory)."""

    def chunked_score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= max_batch:
            return score_fn(x, t)
        return torch.cat([score_fn(x[k:k + max_batch], t[k:k + max_batch])
                          for k in range(0, x.shape[0], max_batch)])

    return chunked_score_fn


class _Setup:
    """What every builder shares: predictor/corrector classes, time grid, start noise level, step wrappers."""

    def __init__(self, sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps,
                 generator, faithful, t0, max_batch=None):
        self.sde = sde
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.predictor = get_predictor(predictor) if isinstance(predictor, str) else predictor
        self.corrector = get_corrector(corrector) if isinstance(corrector, str) else corrector
        self.snr, self.n_steps = snr, n_steps
        self.probability_flow, self.continuous = probability_flow, continuous
        self.eps, self.generator, self.faithful = eps, generator, faithful
        t0 = sde.T if t0 is None else float(t0)
        if not eps < t0 <= sde.T:
            raise ValueError(f"t0 must lie in (eps, T] = ({eps}, {sde.T}], got {t0}")
        self.t0 = t0
        self.full = t0 >= sde.T  # start from the prior (pure noise at sigma_max)
        ve = isinstance(sde, sde_lib.VESDE)
        if not self.full and not ve:
            raise ValueError("t0 < T needs the VE-SDE (sigma(t0) noise level)")
        # The sampler's own time grid for the reverse-diffusion step (fixed mode, or any t0 < T).
        self.use_grid = ve and (not faithful or not self.full)
        self.sigma_start = sde.sigma_max if self.full else float(sde.marginal_prob(
            torch.zeros(1), torch.tensor([t0]))[1])

    def generator_for(self, device: torch.device) -> torch.Generator:
        """The given generator, or a fresh non-deterministically seeded one on ``device``."""
        if self.generator is not None:
            return self.generator
        g = torch.Generator(device=device)
        g.seed()
        return g

    def timesteps(self, device: torch.device) -> torch.Tensor:
        """linspace(t0, eps, N) in float32 (t0 = T for the original's grid)."""
        return torch.linspace(self.t0, self.eps, self.sde.N, device=device)

    def steps(self, model: torch.nn.Module, g: torch.Generator, order: str) -> list:
        """Step callables (x, t, z, t_next) -> (x, x_mean) in ``order`` ('CP' or 'PC'), one score function."""
        score_fn = mutils.get_score_fn(self.sde, model, train=False, continuous=self.continuous)
        if self.max_batch is not None:
            score_fn = _chunked(score_fn, self.max_batch)
        predictor_obj = self.predictor(self.sde, score_fn, self.probability_flow)
        corrector_obj = self.corrector(self.sde, score_fn, self.snr, self.n_steps, faithful=self.faithful)

        def predictor_step(x, t, z, t_next):
            return predictor_obj.update_fn(x, t, z=z, generator=g, t_next=t_next)

        def corrector_step(x, t, z, t_next):
            return corrector_obj.update_fn(x, t, z=z, generator=g)

        predictor_step.n_noise = predictor_obj.n_noise
        corrector_step.n_noise = corrector_obj.n_noise
        by_name = {"P": predictor_step, "C": corrector_step}
        return [by_name[c] for c in order]

    def start_noise(self, shape: Sequence[int], g: torch.Generator, like: torch.Tensor,
                    is_complex: bool) -> torch.Tensor:
        """sigma(t0) z, z ~ N(0, I) real [shape] or complex (drawn as [B, C, 2, H, W]); like's device/precision."""
        dtype, device = _real_dtype(like), like.device
        if not is_complex:
            return _randn(shape, g, dtype, device) * self.sigma_start
        z = _randn((shape[0], shape[1], 2, *shape[2:]), g, dtype, device) * self.sigma_start
        return torch.complex(z[:, :, 0], z[:, :, 1])


def get_sampling_fn(config, sde: sde_lib.SDE, shape: Sequence[int], inverse_scaler: Callable, eps: float, *,
                    generator: torch.Generator | None = None, faithful: bool = False,
                    callback: Callback | None = None) -> Callable:
    """Unconditional PC sampler (Algorithm 1) configured from ``config.sampling`` (as score_sde_pytorch)."""
    if config.sampling.method.lower() != "pc":
        raise ValueError(f"sampler {config.sampling.method!r} not supported (only 'pc')")
    try:
        device = config.device if "device" in config else None
    except TypeError:
        device = getattr(config, "device", None)
    return get_pc_sampler(sde, shape, config.sampling.predictor.lower(), config.sampling.corrector.lower(),
                          inverse_scaler, config.sampling.snr, n_steps=config.sampling.n_steps_each,
                          probability_flow=config.sampling.probability_flow,
                          continuous=config.training.continuous, denoise=config.sampling.noise_removal,
                          eps=eps, device=device, generator=generator, faithful=faithful, callback=callback)


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
    setup = _Setup(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps, generator,
                   faithful, t0, max_batch)

    def pc_sampler(model: torch.nn.Module, x0: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        dev = device if device is not None else next(model.parameters()).device
        g = setup.generator_for(torch.device(dev))
        with torch.no_grad():
            like = torch.empty((), device=dev) if x0 is None else x0.to(dev)
            x = setup.start_noise(shape, g, like, is_complex=False)  # [B, ch, H, W]
            if not setup.full:
                if x0 is None:
                    raise ValueError("t0 < 1 needs a starting image x0")
                x = x0.to(dev) + x
            x, x_mean = _pc_loop(x, steps=setup.steps(model, g, "CP"), timesteps=setup.timesteps(dev),
                                 dc=lambda x, x_mean, sl: (x, x_mean), generator=g, faithful=faithful,
                                 split=False, use_grid=setup.use_grid, channels=shape[1], callback=callback)
            return inverse_scaler(x_mean if denoise else x), sde.N * (n_steps + 1)

    return pc_sampler


def get_pc_fouriercs_fast(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                          n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                          denoise: bool = True, eps: float = 1e-5, *, generator: torch.Generator | None = None,
                          faithful: bool = False, callback: Callback | None = None,
                          t0: float | None = None, max_batch: int | None = None) -> Callable:
    """Algorithm 2 (real-valued images): returns fn(model, data, mask, Fy) -> image [B, 1, H, W].

    Start x = Re(ifft2(Fy + fft2(sigma z)(1 - mask))), then per step: corrector, real data consistency,
    predictor, real data consistency (single-coil shifted FFT, ``utils.SingleCoilCartesian``).
    """
    setup = _Setup(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps, generator,
                   faithful, t0, max_batch)

    def pc_fouriercs(model: torch.nn.Module, data: torch.Tensor, mask: torch.Tensor,
                     Fy: torch.Tensor) -> torch.Tensor:
        g = setup.generator_for(data.device)

        def dc(x, x_mean, sl):
            # faithful: x_mean is the projection of the projected x (the original discards the step's x_mean)
            op = SingleCoilCartesian(_coils(mask, sl))
            return data_consistency_real(op, x, _coils(Fy, sl), x_mean=None if faithful else x_mean)

        with torch.no_grad():
            noise = setup.start_noise(data.shape, g, data, is_complex=False)
            x = torch.real(SingleCoilCartesian(mask).project(noise, Fy))  # [B, 1, H, W]
            x, x_mean = _pc_loop(x, steps=setup.steps(model, g, "CP"), timesteps=setup.timesteps(data.device),
                                 dc=dc, generator=g, faithful=faithful, split=faithful,
                                 use_grid=setup.use_grid, callback=callback)
            return inverse_scaler(x_mean if denoise else x)

    return pc_fouriercs


def get_pc_fouriercs_RI(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                        n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                        denoise: bool = True, eps: float = 1e-5, *, generator: torch.Generator | None = None,
                        faithful: bool = False, callback: Callback | None = None,
                        t0: float | None = None, max_batch: int | None = None) -> Callable:
    """Algorithm 3 (complex single-coil): returns fn(model, data, mask, Fy) -> complex image [B, 1, H, W].

    Real and imaginary parts share each corrector/predictor step (corrector first), followed by complex
    data consistency of x and x_mean. The original starts from real noise; the fixed mode from complex noise.
    """
    setup = _Setup(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps, generator,
                   faithful, t0, max_batch)

    def pc_fouriercs(model: torch.nn.Module, data: torch.Tensor, mask: torch.Tensor,
                     Fy: torch.Tensor) -> torch.Tensor:
        g = setup.generator_for(data.device)

        def dc(x, x_mean, sl):
            return data_consistency(SingleCoilCartesian(_coils(mask, sl)), x, x_mean, _coils(Fy, sl))

        with torch.no_grad():
            noise = setup.start_noise(data.shape, g, data, is_complex=not faithful)
            x = SingleCoilCartesian(mask).project(noise, Fy)  # [B, 1, H, W] complex
            x, x_mean = _pc_loop(x, steps=setup.steps(model, g, "CP"), timesteps=setup.timesteps(data.device),
                                 dc=dc, generator=g,
                                 faithful=faithful, split=faithful, use_grid=setup.use_grid, callback=callback)
            return inverse_scaler(x_mean if denoise else x)

    return pc_fouriercs


def _coils(t: torch.Tensor, sl: slice) -> torch.Tensor:
    """The coil slice ``sl`` of a [B, C, H, W] tensor; tensors with one coil (a shared mask) pass through."""
    return t[:, sl] if t.dim() == 4 and t.shape[1] > 1 else t


def _multicoil_sampler(setup: _Setup, inverse_scaler: Callable, denoise: bool, mask: torch.Tensor,
                       batch_coils: bool, callback: Callback | None, post_step_for=None) -> Callable:
    """Algorithms 4 and 5: per-coil complex PC sampling (predictor then corrector) with per-coil DC."""
    if mask is None:
        raise ValueError("the multi-coil samplers need a sampling mask")
    faithful = setup.faithful

    def pc_fouriercs(model: torch.nn.Module, data: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = setup.generator_for(data.device)

        def dc(x, x_mean, sl):
            return data_consistency(MultiCoilCartesian(_coils(mask, sl)), x, x_mean, _coils(y, sl))

        with torch.no_grad():
            if faithful and setup.full:
                # The original: pure complex noise per coil, real part drawn first, no data consistency.
                dtype = _real_dtype(data)
                x_r = _randn(data.shape, g, dtype, data.device) * setup.sigma_start
                x_i = _randn(data.shape, g, dtype, data.device) * setup.sigma_start
                x = torch.complex(x_r, x_i)  # [B, C, H, W]
            else:
                x = MultiCoilCartesian(mask).project(setup.start_noise(data.shape, g, data, True), y)
            post_step = None if post_step_for is None else post_step_for(y)
            x, x_mean = _pc_loop(x, steps=setup.steps(model, g, "PC"), timesteps=setup.timesteps(data.device),
                                 dc=dc, generator=g, faithful=faithful, split=faithful or not batch_coils,
                                 use_grid=setup.use_grid, post_step=post_step, callback=callback)
            return inverse_scaler(x_mean if denoise else x)

    return pc_fouriercs


def get_pc_fouriercs_RI_PI_SSOS(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable, snr: float,
                                n_steps: int = 1, probability_flow: bool = False, continuous: bool = False,
                                denoise: bool = True, eps: float = 1e-5, mask: torch.Tensor | None = None, *,
                                generator: torch.Generator | None = None, faithful: bool = False,
                                callback: Callback | None = None, t0: float | None = None,
                                batch_coils: bool = True, max_batch: int | None = None) -> Callable:
    """Algorithm 4 (multi-coil, separate coils): returns fn(model, data, y) -> coil images [B, C, H, W].

    Combine the result with ``utils.root_sum_of_squares``. ``batch_coils``: all coils and parts in one
    network call per step (fixed mode; ignored when ``faithful``, which calls per coil and part).
    """
    setup = _Setup(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps, generator,
                   faithful, t0, max_batch)
    return _multicoil_sampler(setup, inverse_scaler, denoise, mask, batch_coils, callback)


def get_pc_fouriercs_RI_coil_SENSE(sde: sde_lib.SDE, predictor, corrector, inverse_scaler: Callable,
                                   snr: float, n_steps: int = 1, lamb_schedule=None,
                                   probability_flow: bool = False, continuous: bool = False,
                                   denoise: bool = True, eps: float = 1e-5, sens: torch.Tensor | None = None,
                                   mask: torch.Tensor | None = None, m_steps: int = 10, *,
                                   generator: torch.Generator | None = None, faithful: bool = False,
                                   callback: Callback | None = None, t0: float | None = None,
                                   batch_coils: bool = True, max_batch: int | None = None) -> Callable:
    """Algorithm 5 (hybrid): Algorithm 4 plus, every ``m_steps`` iterations, a SENSE Kaczmarz step.

    Returns fn(model, data, y) -> coil images [B, C, H, W]. Fixed mode: x_c += S_c lamb A^H(y - A S^H x)
    with lambda_i = schedule(i * total / N); faithful: the original's broadcast step with lambda_i =
    schedule(i) (see ``utils.kaczmarz_original``). Default schedule: linear 1.0 -> 0.2.
    """
    if sens is None:
        raise ValueError("Algorithm 5 needs coil sensitivity maps (sens)")
    if m_steps < 1:
        raise ValueError(f"m_steps must be >= 1, got {m_steps}")
    lamb_schedule = lambda_schedule_linear(1.0, 0.2) if lamb_schedule is None else lamb_schedule
    setup = _Setup(sde, predictor, corrector, snr, n_steps, probability_flow, continuous, eps, generator,
                   faithful, t0, max_batch)
    op = SENSE(sens, mask) if mask is not None else None

    def post_step_for(y):
        def kaczmarz(i, x, x_mean):
            if i % m_steps != 0:
                return x, x_mean
            if faithful:
                lamb = lamb_schedule.get_current_lambda(i)
                return (kaczmarz_original(x, y, sens, mask, lamb), kaczmarz_original(x_mean, y, sens, mask, lamb))
            total = getattr(lamb_schedule, "total", sde.N)
            lamb = lamb_schedule.get_current_lambda(i * total / sde.N)  # schedule stretched over N
            return op.kaczmarz_coils(x, y, lamb), op.kaczmarz_coils(x_mean, y, lamb)
        return kaczmarz

    return _multicoil_sampler(setup, inverse_scaler, denoise, mask, batch_coils, callback, post_step_for)
