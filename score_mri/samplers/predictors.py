"""Predictors and correctors of the reverse-time VE-SDE (Song et al. 2021, Algorithms 2-3; Chung & Ye 2022).

Each step maps network-shaped x [n, channels, H, W] at times t [n] to (x, x_mean). Noise comes from an
explicit ``torch.Generator`` (or a pre-drawn ``z``); the global RNG is never used. New steps are one class
plus ``@register_predictor``/``@register_corrector``; :mod:`sampling` runs them inside its PC loop.

A predictor whose class sets ``projects = True`` receives ``project``, the algorithm's data consistency of
a clean (denoised) estimate in network shape, and the loop does not apply data consistency after it.
"""
from __future__ import annotations

import abc
import warnings
from typing import Callable, Sequence

import torch

from score_mri import sde as sde_lib
from models.registry import lookup, registrar
from score_mri.sde import batch_expand

__all__ = [
    "Predictor", "Corrector", "ReverseDiffusionPredictor", "AncestralSamplingPredictor", "EulerMaruyamaPredictor",
    "NonePredictor", "DecomposedPredictor", "LangevinCorrector", "NoneCorrector", "register_predictor", "register_corrector",
    "get_predictor", "get_corrector",
]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Below this many steps the SDE predictors (reverse diffusion, ancestral, Euler-Maruyama) from sigma_max
# diverge with the embedded prior (benchmarks/quality_vs_calls.py: ancestral N=5 -30.7 dB against 25.7 dB
# zero-filled); they warn, and the decomposed predictor 'dds' is the few-step choice.
SMALL_N = 10

_PREDICTORS: dict[str, type] = {}
_CORRECTORS: dict[str, type] = {}
register_predictor = registrar(_PREDICTORS, "predictor")
register_corrector = registrar(_CORRECTORS, "corrector")


def get_predictor(name: str) -> type:
    """The predictor class registered under ``name`` ('reverse_diffusion', 'ancestral_sampling', ...)."""
    return lookup(_PREDICTORS, "predictor", name)


def get_corrector(name: str) -> type:
    """The corrector class registered under ``name`` ('langevin', 'none')."""
    return lookup(_CORRECTORS, "corrector", name)


# ----------------------------------------------------------------------------------------------------------
# Noise and small tensor helpers
# ----------------------------------------------------------------------------------------------------------

def randn(shape: Sequence[int], generator: torch.Generator | None, dtype: torch.dtype,
           device: torch.device) -> torch.Tensor:
    """Standard normal noise from ``generator``, drawn on the generator's device and moved to ``device``."""
    if generator is None:
        raise ValueError("sampling noise needs an explicit torch.Generator (the global RNG is never used)")
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device).to(device)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of x's shape, real dtype and device."""
    return randn(x.shape, generator, x.dtype, x.device)


def real_dtype(x: torch.Tensor) -> torch.dtype:
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
    projects = False  # True: update_fn takes ``project`` (data consistency of a clean estimate)
    advances = True   # the step leaves x at the next time's noise level
    warns_below_N = 0  # from_settings warns when settings.N is smaller (steps too coarse to be stable)

    def __init__(self, sde: sde_lib.SDE, score_fn: ScoreFn, probability_flow: bool = False):
        super().__init__()
        self.sde = sde
        self.score_fn = score_fn
        self.probability_flow = probability_flow
        self.rsde = sde.reverse(score_fn, probability_flow)

    @classmethod
    def from_settings(cls, sde: sde_lib.SDE, score_fn: ScoreFn, settings) -> "Predictor":
        """Build from a ``sampling.SamplerSettings`` (override to read a predictor's own settings)."""
        cls._warn_small_N(settings)
        return cls(sde, score_fn, settings.probability_flow)

    @classmethod
    def _warn_small_N(cls, settings) -> None:
        """One-line warning when N is below ``warns_below_N``."""
        if int(settings.N) < cls.warns_below_N:
            name = next((k for k, v in _PREDICTORS.items() if v is cls), cls.__name__)
            warnings.warn(f"{name} with N={settings.N} < {cls.warns_below_N} steps can diverge (far below the "
                          "zero-filled image); use --predictor dds for few steps", UserWarning, stacklevel=3)

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

    @classmethod
    def from_settings(cls, sde: sde_lib.SDE, score_fn: ScoreFn, settings) -> "Corrector":
        """Build from a ``sampling.SamplerSettings``."""
        return cls(sde, score_fn, settings.snr, settings.n_steps, faithful=settings.faithful)

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

    warns_below_N = SMALL_N

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One reverse-diffusion step; G_i^2 = sigma_i^2 - sigma_{i+1}^2 on the grid given by ``t_next``."""
        if t_next is None:
            f, G = self.rsde.discretize(x, t)  # SMLD on the SDE's grid: G = sqrt(sigma_i^2 - sigma_{i-1}^2)
            x_mean = x - f
        else:
            G2 = self.sde.marginal_prob(torch.zeros_like(t), t)[1] ** 2 - _sigma_next(self.sde, t_next) ** 2
            weight = 0.5 if self.probability_flow else 1.0
            x_mean = x + batch_expand(G2, x) * self.score_fn(x, t) * weight
            G = torch.zeros_like(G2) if self.probability_flow else torch.sqrt(G2)
        z = _randn_like(x, generator) if z is None else z
        x = x_mean + batch_expand(G, x) * z
        return x, x_mean


@register_predictor(name="ancestral_sampling")
class AncestralSamplingPredictor(Predictor):
    """VE ancestral step (score_sde_pytorch; Ho et al. 2020 posterior for the VE chain).

    x_mean = x + (sigma_i^2 - sigma_{i+1}^2) s(x, t), x = x_mean + sqrt(sigma_{i+1}^2 (sigma_i^2 -
    sigma_{i+1}^2) / sigma_i^2) z. Unlike the reverse-diffusion step, its injected noise shrinks with
    the step, so the variance falls to sigma_{i+1}^2 even for large steps: the predictor for few-step runs.
    """

    warns_below_N = SMALL_N

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One ancestral step towards sigma(t_next) (None: the SDE's adjacent discrete sigma)."""
        if not isinstance(self.sde, sde_lib.VESDE):
            raise NotImplementedError("ancestral sampling is implemented for the VE-SDE only")
        if t_next is None:  # the SDE's discrete grid, as score_sde_pytorch
            sigma, sigma_next = self.sde.adjacent_sigmas(t)
        else:
            sigma, sigma_next = self.sde.marginal_prob(torch.zeros_like(t), t)[1], _sigma_next(self.sde, t_next)
        G2 = sigma ** 2 - sigma_next ** 2
        x_mean = x + batch_expand(G2, x) * self.score_fn(x, t)
        std = torch.sqrt(sigma_next ** 2 * G2 / sigma ** 2)
        z = _randn_like(x, generator) if z is None else z
        return x_mean + batch_expand(std, x) * z, x_mean


@register_predictor(name="euler_maruyama")
class EulerMaruyamaPredictor(Predictor):
    """Euler-Maruyama step of the reverse SDE: x_mean = x + f_rev dt, x = x_mean + g sqrt(-dt) z."""

    warns_below_N = SMALL_N

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None):
        """One Euler-Maruyama step with dt = -1/N (or t_next - t on the sampler's grid)."""
        dt = -1.0 / self.rsde.N if t_next is None else batch_expand(torch.clamp(t_next, min=0) - t, x)
        z = _randn_like(x, generator) if z is None else z
        drift, diffusion = self.rsde.sde(x, t)
        x_mean = x + drift * dt
        x = x_mean + batch_expand(diffusion, x) * (-dt) ** 0.5 * z
        return x, x_mean


@register_predictor(name="dds")
class DecomposedPredictor(Predictor):
    """Decomposed diffusion step (DDS, Chung et al. ICLR 2024): Tweedie denoise, data consistency, re-noise.

    x0_hat = x + sigma_i^2 s(x, t_i); x0_dc = project(x0_hat) (the algorithm's data consistency on the clean
    estimate); eps_hat = (x - x0_hat) / sigma_i; x = x0_dc + sigma_{i+1} (sqrt(1 - eta^2) eps_hat + eta z)
    (DDIM re-noising: eta = 0 deterministic, 1 ancestral). x_mean = x0_dc, so the last step returns the
    data-consistent denoised estimate.
    """

    projects = True
    max_sigma_ratio = 2.0  # few steps start low enough that no step shrinks sigma by more (measured)

    def __init__(self, sde: sde_lib.SDE, score_fn: ScoreFn, probability_flow: bool = False, eta: float = 0.0):
        super().__init__(sde, score_fn, probability_flow)
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        self.eta = float(eta)

    @classmethod
    def from_settings(cls, sde: sde_lib.SDE, score_fn: ScoreFn, settings) -> "DecomposedPredictor":
        """Build from a ``sampling.SamplerSettings`` (reads ``eta``)."""
        return cls(sde, score_fn, settings.probability_flow, eta=getattr(settings, "eta", 0.0))

    @property
    def n_noise(self) -> int:
        """One draw when eta > 0, none for the deterministic step."""
        return 1 if self.eta > 0 else 0

    def update_fn(self, x, t, *, z=None, generator=None, t_next=None, project=None):
        """One DDS step from sigma(t) to sigma(t_next) (None: the SDE's adjacent discrete sigma)."""
        if not isinstance(self.sde, sde_lib.VESDE):
            raise NotImplementedError("the decomposed sampler is implemented for the VE-SDE only")
        if t_next is None:
            sigma, sigma_next = self.sde.adjacent_sigmas(t)
        else:
            sigma, sigma_next = self.sde.marginal_prob(torch.zeros_like(t), t)[1], _sigma_next(self.sde, t_next)
        sigma_b = batch_expand(sigma, x)
        x0_hat = x + sigma_b ** 2 * self.score_fn(x, t)                    # Tweedie: E[x_0 | x_t]
        x0_dc = x0_hat if project is None else project(x0_hat)
        eps_hat = (x - x0_hat) / sigma_b
        direction = eps_hat * (1.0 - self.eta ** 2) ** 0.5
        if self.eta > 0:
            noise = _randn_like(x, generator) if z is None else z
            direction = direction + self.eta * noise
        return x0_dc + batch_expand(sigma_next, x) * direction, x0_dc


@register_predictor(name="none")
class NonePredictor(Predictor):
    """No predictor step (corrector-only sampling)."""

    n_noise = 0
    advances = False

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
            x_mean = x + batch_expand(step_size, x) * grad
            x = x_mean + batch_expand(torch.sqrt(step_size * 2), x) * noise
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
