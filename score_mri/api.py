"""The Python API: reconstruct measured k-space in one call, with the config's default settings.

    import numpy as np, score_mri
    kspace = score_mri.fft2c(np.load("samples/single-coil/001.npy")) * score_mri.simulate_mask((320, 320))
    result = score_mri.reconstruct(kspace)       # result.image, result.network_calls, result.seconds

k-space follows the fastMRI convention (centered orthonormal FFT, :func:`fft2c`): single-coil ``[H, W]`` or
multi-coil ``[C, H, W]``, numpy or torch, unsampled entries zero (or a ``mask``). The image comes back in the
input's units.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from score_mri import recon
from score_mri.config import load_config
from score_mri.errors import UserError
from score_mri.paths import DEFAULT_CKPT, DEFAULT_CONFIG
from score_mri.physics import fft as _fft
from score_mri.physics.masks import calib_width
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
from score_mri.physics.sens_maps import espirit, unit_peak
from score_mri.samplers.pc_loop import SamplerSettings
from score_mri.samplers.table import SAMPLERS
from score_mri.utils import get_data_inverse_scaler

__all__ = ["Result", "reconstruct", "simulate_mask", "fft2c", "ifft2c", "load_prior"]

Array = Any  # numpy array or torch tensor


@dataclass
class Result:
    """What :func:`reconstruct` returns (images [H, W] in the input's units)."""
    image: np.ndarray               # posterior mean: complex (single image) or RSS magnitude (coil images)
    zero_filled: np.ndarray         # A^H y: complex (single coil) or RSS magnitude (multi-coil)
    std: np.ndarray | None          # posterior standard deviation (num_samples > 1)
    network_calls: int
    seconds: float
    sampler: str
    settings: SamplerSettings


def _tensor(a: Array) -> torch.Tensor:
    """A torch tensor view of a numpy array or tensor (on the CPU)."""
    return a.detach().cpu() if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _like(t: torch.Tensor, a: Array) -> Array:
    """``t`` as the type of ``a`` (numpy in, numpy out)."""
    return t if isinstance(a, torch.Tensor) else t.numpy()


def fft2c(image: Array) -> Array:
    """Centered orthonormal 2-D FFT over the last two axes (fastMRI convention); numpy in, numpy out."""
    return _like(_fft.fft2c(_tensor(image).to(torch.complex64)), image)


def ifft2c(kspace: Array) -> Array:
    """Inverse of :func:`fft2c`."""
    return _like(_fft.ifft2c(_tensor(kspace).to(torch.complex64)), kspace)


def simulate_mask(shape: tuple[int, ...], mask_type: str = "gaussian1d", acc_factor: float = 4,
                  center_fraction: float = 0.08, seed: int = 0) -> np.ndarray:
    """A seeded retrospective 0/1 sampling mask [H, W] (float32) for an image of ``shape`` (``[..., H, W]``).

    The CLI's mask (:func:`score_mri.recon.simulate_mask`): the same arguments give the same mask.
    """
    H, W = shape[-2:]
    return recon.simulate_mask((1, 1, H, W), mask_type, acc_factor, center_fraction, seed)[0, 0].numpy()


@functools.lru_cache(maxsize=2)
def _cached_prior(config: str, ckpt: str, device: str) -> tuple[Any, torch.nn.Module]:
    """(config, model) of a config file and checkpoint, loaded once per process."""
    cfg = load_config(config)
    return cfg, recon.load_model(cfg, ckpt, device, "auto")


def load_prior(config: Any = None, ckpt: str | Path | None = None, device: str | None = None
               ) -> tuple[Any, torch.nn.Module]:
    """(config, model): a config file (default: the embedded prior's) or config object, and its checkpoint;
    the network body runs in bf16 where the hardware has it (``perf.resolve_precision('auto')``)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = str(ckpt or DEFAULT_CKPT)
    if config is None or isinstance(config, (str, Path)):
        return _cached_prior(str(config or DEFAULT_CONFIG), ckpt, device)
    return config, recon.load_model(config, ckpt, device, "auto")


def _mask_of(kspace: torch.Tensor, mask: Array | None) -> torch.Tensor:
    """The 0/1 mask [1 or C, H, W] (float32): ``mask`` broadcast, or the nonzero entries of ``kspace``."""
    if mask is None:
        m = (kspace.abs() > 0).any(dim=0, keepdim=True)
    else:
        m = _tensor(mask)
        m = (m.abs() if m.is_complex() else m) > 0
        m = m.reshape(-1, *m.shape[-2:])
        if m.shape[-2:] != kspace.shape[-2:] or m.shape[0] not in (1, kspace.shape[0]):
            raise UserError(f"mask shape {tuple(m.shape)} does not match k-space {tuple(kspace.shape)}")
    if not m.any():
        raise UserError("the mask (or the k-space) samples nothing")
    return m.float()


def _espirit(kspace: torch.Tensor, mask2d: torch.Tensor) -> torch.Tensor:
    """ESPIRiT maps [C, H, W] from the measured k-space, calibrated on its fully sampled centre."""
    try:
        width = calib_width(mask2d.numpy())
    except ValueError as e:
        raise UserError(f"no coil maps given and none can be calibrated: {e}") from None
    return torch.from_numpy(espirit(kspace.numpy(), width))


def reconstruct(kspace: Array, mask: Array | None = None, *, coil_maps: Array | None = None, config: Any = None,
                ckpt: str | Path | None = None, sampler: str | None = None, seed: int = 0,
                device: str | None = None, num_samples: int = 1,
                callback: Callable[[int, int, torch.Tensor], None] | None = None, **overrides: Any) -> Result:
    """Reconstruct undersampled k-space with the score prior.

    ``kspace``: ``[H, W]`` (single coil) or ``[C, H, W]`` (coils), fastMRI convention; ``mask``: ``[H, W]`` or
    ``[C, H, W]`` (default: the nonzero entries); ``coil_maps``: ``[C, H, W]`` for the SENSE and hybrid
    samplers (default: ESPIRiT from the measured calibration region; given maps are divided by the peak of
    their root-sum-of-squares, so that it is 1 as for ESPIRiT's). ``sampler``: a key of ``SAMPLERS``
    (default 'complex' for one coil, 'sense' for several). ``config``/``ckpt``: a config file or object and
    its checkpoint (default: the embedded prior). ``overrides``: :class:`SamplerSettings` fields that replace
    the config's defaults (``N=50``, ``predictor='dds'``, ...). ``callback(i, N, x0)`` sees each denoised
    estimate.
    """
    k = _tensor(kspace)
    if k.dim() not in (2, 3) or min(k.shape[-2:]) < 2:
        raise UserError(f"k-space must be [H, W] or [C, H, W], got shape {tuple(k.shape)}")
    coils = k.dim() == 3
    k = k.reshape(-1, *k.shape[-2:]).to(torch.complex64)                              # [C, H, W]
    if not torch.isfinite(torch.view_as_real(k)).all():
        raise UserError("k-space holds NaN or Inf")
    name = sampler or ("sense" if coils else "complex")
    if name not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; expected one of {', '.join(sorted(SAMPLERS))}")
    cfg, model = load_prior(config, ckpt, device)
    dev = next(model.parameters()).device
    try:
        settings = SamplerSettings.from_config(cfg, coils=name in ("ssos", "hybrid"), **overrides)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    m = _mask_of(k, mask)
    k = k * m
    x_zf = _fft.ifft2c(k)                                                             # [C, H, W]
    scale = float(x_zf.abs().max()) or 1.0
    m4 = m.expand(k.shape).contiguous()[None].to(dev)                                 # [1, C, H, W]
    x4 = (x_zf / scale)[None].to(dev)
    if coils:
        cart = MultiCoilCartesian(m4)
        op = cart
        if name in ("sense", "hybrid"):
            maps = unit_peak(_tensor(coil_maps))[0] if coil_maps is not None else _espirit(k / scale, m[0])
            op = SENSE(maps.to(torch.complex64).reshape(1, *k.shape).to(dev), m4)
    else:
        cart = op = SingleCoilCartesian(m4)
    y = cart.measured((k / scale)[None].to(dev))                                      # the measured data, op's units
    rec = recon.reconstruct(model, name, op, y, settings, num_samples=num_samples,
                            generator=torch.Generator(device=dev).manual_seed(int(seed)), callback=callback,
                            inverse_scaler=get_data_inverse_scaler(cfg))
    zf = recon.to_image(x4) * scale
    return Result(image=rec.image * scale, zero_filled=zf, std=None if rec.std is None else rec.std * scale,
                  network_calls=rec.network_calls, seconds=rec.seconds, sampler=name, settings=settings)
