"""The measurement noise level, estimated from the measured k-space itself, and the weight it gives the prior.

Thermal noise in MR k-space is white and complex Gaussian; the image's own energy falls off steeply away
from the k-space centre. So the outermost *measured* samples hold mostly noise, and the median of their
power estimates the noise variance robustly (for complex Gaussian noise of variance s^2 per sample, |n|^2
is exponential with median s^2 ln 2; the few samples that still carry signal barely move a median).
Noise-free (simulated) data give a small value set by the image's finest detail.

The weight follows from the maximum a posteriori view of one data-consistency step on a prior estimate
x_hat whose error has standard deviation sigma (the prior's current noise level, Chung et al. 2024,
Decomposed Diffusion Sampler): minimising ||A x - y||^2 / s^2 + ||x - x_hat||^2 / sigma^2 is the CG system
(A^H A + gamma I) x = A^H y + gamma x_hat with gamma = (s / sigma)^2.

Shapes: k-space y [B, C, H, W] with the DC sample at (H // 2, W // 2); mask 0/1 broadcastable to y.
"""
from __future__ import annotations

import math

import torch

__all__ = ["estimate_noise_std", "map_weight"]

OUTER_FRACTION = 0.1  # the outermost tenth of the measured samples (by k-space radius)


def _radius(H: int, W: int, device: torch.device) -> torch.Tensor:
    """Normalised k-space radius [H, W]: 1 at the middle of each edge, 0 at the DC sample."""
    ky = (torch.arange(H, device=device, dtype=torch.float32) - H // 2) / (H / 2)
    kx = (torch.arange(W, device=device, dtype=torch.float32) - W // 2) / (W / 2)
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def estimate_noise_std(y: torch.Tensor, mask: torch.Tensor, fraction: float = OUTER_FRACTION) -> torch.Tensor:
    """Per batch item, the standard deviation s of complex white noise per k-space sample [B] (y's units).

    Per coil, s_c^2 = median(|y|^2) / ln 2 over the outermost ``fraction`` of the measured samples; the
    result is sqrt(mean_c s_c^2). Samples that are exactly zero in every coil are not measurements (zero-padded
    k-space, e.g. a partial-Fourier or interpolated matrix: thermal noise is never exactly 0) and are left out.
    An item with no measured sample gets 0.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    B, C, H, W = y.shape
    measured = (torch.broadcast_to(mask != 0, (B, C, H, W)) & (y != 0)).any(dim=1)  # [B, H, W]
    radius = _radius(H, W, y.device)
    out = torch.zeros(B, dtype=torch.float64)
    for b in range(B):
        r = radius[measured[b]]
        if r.numel() == 0:
            continue
        outer = measured[b] & (radius >= torch.quantile(r, 1.0 - fraction))
        power = torch.abs(y[b][:, outer]).double() ** 2                           # [C, n]
        out[b] = torch.sqrt(torch.mean(torch.median(power, dim=1).values / math.log(2)))
    return out.to(y.device)


def map_weight(gamma: float, noise_std: torch.Tensor, sigma: float) -> torch.Tensor:
    """max(gamma, (s / sigma)^2) per batch item [B, 1, 1, 1]: the prior estimate's weight at noise level sigma."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    weight = torch.clamp((noise_std.double() / float(sigma)) ** 2, min=float(gamma))
    return weight.reshape(-1, 1, 1, 1)
