"""Forward SDEs, their reverse-time SDE/ODE, and the VE-SDE used by score-MRI (Song et al. 2021, eq. 31).

Follows Song et al., "Score-Based Generative Modeling through SDEs" (ICLR 2021): forward SDE
dx = f(x, t) dt + g(t) dw (eq. 5), reverse SDE dx = [f - g^2 grad log p_t(x)] dt + g dw_bar (eq. 6) and its
probability-flow ODE (eq. 13). All functions act on a mini-batch: ``t`` has shape [B].
"""
from __future__ import annotations

import abc
from typing import Callable

import numpy as np
import torch

__all__ = ["SDE", "ReverseSDE", "VESDE"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def batch_expand(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """Reshape a per-sample quantity [B] to [B, 1, ..., 1] so it broadcasts against ``x``."""
    if isinstance(v, torch.Tensor) and v.dim() == 1:
        return v.reshape(-1, *([1] * (x.dim() - 1)))
    return v


class SDE(abc.ABC):
    """Abstract forward SDE on [0, T] with N discretisation steps."""

    def __init__(self, N: int):
        super().__init__()
        self._N = int(N)

    @property
    def N(self) -> int:
        """Number of discretisation steps."""
        return self._N

    @property
    @abc.abstractmethod
    def T(self) -> float:
        """End time of the SDE."""

    @abc.abstractmethod
    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift f(x, t) [B, ...] and diffusion g(t) [B] of the forward SDE (eq. 5)."""

    @abc.abstractmethod
    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the perturbation kernel p_{0t}(x(t) | x(0) = x)."""

    @abc.abstractmethod
    def prior_sampling(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """One sample of the prior p_T with the given shape (drawn from ``generator`` when given)."""

    @abc.abstractmethod
    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the prior p_T at z, one value per batch element."""

    def euler_maruyama_discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Euler-Maruyama step x_{i+1} = x_i + f dt + g sqrt(dt) z with dt = 1/N: returns (f dt, g sqrt(dt))."""
        dt = 1 / self.N
        drift, diffusion = self.sde(x, t)
        f = drift * dt
        G = diffusion * torch.sqrt(torch.tensor(dt, dtype=diffusion.dtype, device=t.device))
        return f, G

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Discretisation x_{i+1} = x_i + f_i(x_i) + G_i z_i; defaults to Euler-Maruyama."""
        return self.euler_maruyama_discretize(x, t)

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE (eq. 6) or, with ``probability_flow``, the probability-flow ODE (eq. 13)."""
        return ReverseSDE(self, score_fn, probability_flow)


class ReverseSDE:
    """Reverse-time SDE/ODE of a forward SDE given a score function s(x, t) ~ grad log p_t(x)."""

    def __init__(self, forward: SDE, score_fn: ScoreFn, probability_flow: bool = False):
        self.forward = forward
        self.score_fn = score_fn
        self.probability_flow = bool(probability_flow)

    @property
    def N(self) -> int:
        """Number of discretisation steps (same as the forward SDE)."""
        return self.forward.N

    @property
    def T(self) -> float:
        """End time (same as the forward SDE)."""
        return self.forward.T

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
        """Reverse drift f - g^2 s (halved score for the ODE) and diffusion g (0 for the ODE)."""
        drift, diffusion = self.forward.sde(x, t)
        score = self.score_fn(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        drift = drift - batch_expand(diffusion, x) ** 2 * score * weight
        diffusion = 0.0 if self.probability_flow else diffusion
        return drift, diffusion

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Discretised reverse step: rev_f = f - G^2 s (halved for the ODE), rev_G = G (0 for the ODE)."""
        f, G = self.forward.discretize(x, t)
        weight = 0.5 if self.probability_flow else 1.0
        rev_f = f - batch_expand(G, x) ** 2 * self.score_fn(x, t) * weight
        rev_G = torch.zeros_like(G) if self.probability_flow else G
        return rev_f, rev_G


class VESDE(SDE):
    """Variance-exploding SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t, drift 0 (SMLD)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50, N: int = 1000):
        super().__init__(N)
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        # ascending geometric sequence sigma_0 = sigma_min, ..., sigma_{N-1} = sigma_max (float32)
        self.discrete_sigmas = torch.exp(torch.linspace(np.log(sigma_min), np.log(sigma_max), self.N))

    @property
    def T(self) -> float:
        """End time 1."""
        return 1

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift 0 and diffusion g(t) = sigma(t) sqrt(2 (log sigma_max - log sigma_min))."""
        sigma = self.sigma(t)
        drift = torch.zeros_like(x)
        # the constant is formed in float64 and rounded once by the product, as in the original
        log_ratio = 2 * (np.log(self.sigma_max) - np.log(self.sigma_min))
        diffusion = sigma * torch.sqrt(torch.tensor(log_ratio, dtype=torch.float64, device=t.device))
        return drift, diffusion

    def marginal_prob(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbation kernel N(x, sigma(t)^2 I): mean x, std sigma(t)."""
        return x, self.sigma(t)

    def prior_sampling(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample N(0, sigma_max^2 I) in float32, on the generator's device (CPU without one)."""
        device = generator.device if generator is not None else None
        return torch.randn(*shape, generator=generator, device=device) * self.sigma_max

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """Gaussian log-density of N(0, sigma_max^2 I), summed over all but the batch dimension."""
        n = int(np.prod(z.shape[1:]))
        dims = tuple(range(1, z.dim()))
        return -n / 2.0 * np.log(2 * np.pi * self.sigma_max ** 2) - torch.sum(z ** 2, dim=dims) / (
            2 * self.sigma_max ** 2)

    def timestep_index(self, t: torch.Tensor) -> torch.Tensor:
        """Index i = floor(t (N - 1) / T) of the discrete noise level used at time t."""
        return (t * (self.N - 1) / self.T).long()

    def adjacent_sigmas(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma_i, sigma_{i-1}) at time t, i = floor(t (N - 1) / T), with sigma_{-1} = 0."""
        i = self.timestep_index(t)
        sigmas = self.discrete_sigmas.to(t.device)
        if t.is_floating_point() and t.dtype != sigmas.dtype:
            sigmas = sigmas.to(t.dtype)
        sigma = sigmas[i]
        adjacent_sigma = torch.where(i == 0, torch.zeros_like(sigma), sigmas[i - 1])
        return sigma, adjacent_sigma

    def discretize(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SMLD (NCSN) discretisation: f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2)."""
        sigma, adjacent_sigma = self.adjacent_sigmas(t)
        f = torch.zeros_like(x)
        G = torch.sqrt(sigma ** 2 - adjacent_sigma ** 2)
        return f, G
