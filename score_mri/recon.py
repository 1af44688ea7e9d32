"""The library entry of score-MRI: load a prior, build measurements, :func:`reconstruct`.

Every CLI and every benchmark goes through :func:`reconstruct`, so a sampler, an operator or an input
format added once is available everywhere::

    model = load_model(config, "weights/colin27_ncsnpp_small.pth", "cpu")
    op = operators.SingleCoilCartesian(mask)                  # mask [1, 1, H, W]
    y = op.A(image)                                           # measured k-space
    out = reconstruct(model, "real", op, y, sampling.SamplerSettings(N=50, predictor="ancestral_sampling"),
                      generator=torch.Generator().manual_seed(0))
    out.image                                                 # [H, W] (RSS for coil images)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from score_mri import samplers as sampling
from score_mri.errors import UserError
from score_mri.utils import root_sum_of_squares

__all__ = ["Reconstruction", "load_model", "simulate_mask", "to_image", "size_multiple", "reconstruct"]


def load_model(config, ckpt: str | Path, device: str, precision: str | None = "fp32") -> torch.nn.Module:
    """Create the score model of ``config`` and load the checkpoint's (EMA) weights for inference;
    ``precision`` ('auto', 'bf16', 'fp32') is the precision of its network calls (score_mri.perf)."""
    from models import utils as mutils
    from models.checkpoint import CheckpointError, load_model_weights

    from score_mri import perf
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    try:
        device = torch.device(device)
        model = mutils.create_model(config, device=device)
        load_model_weights(ckpt, model, device=device)
    except CheckpointError as e:  # its message names the file and says what is wrong
        raise UserError(str(e).splitlines()[0]) from None
    except RuntimeError as e:
        if "device" in str(e).lower() or "cuda" in str(e).lower():
            raise UserError(f"device {device}: {e}".splitlines()[0]) from None
        raise
    perf.configure_cpu_allocator()  # keep freed activations in the heap: no page faults per forward
    try:  # eval, frozen, channels_last on the CPU, marked with its inference precision
        return perf.prepare_model_for_inference(model, device, precision=precision)
    except ValueError as e:
        raise UserError(str(e)) from None


def simulate_mask(shape: tuple[int, ...], mask_type: str, acc_factor: float, center_fraction: float,
                  seed: int, device: torch.device | str = "cpu", faithful: bool = False) -> torch.Tensor:
    """A retrospective 0/1 mask [1, C, H, W] (float32), one pattern shared by the C coils (seeded).

    ``faithful``: the original's Poisson mask (sigpy seed 0 whatever the seed); other types are unchanged.
    Otherwise a Poisson mask has any H x W and a fully sampled centre of ``center_fraction`` of each side
    (sigpy's ``calib``; 0 gives none), which phase estimation and ESPIRiT calibrate on.
    """
    from score_mri.physics import masks
    if mask_type not in masks.MASK_TYPES:
        raise UserError(f"unknown mask type {mask_type!r}; expected one of {', '.join(masks.MASK_TYPES)}")
    H, W = shape[-2:]
    if not mask_type.endswith("1d") and H != W and (mask_type != "poisson" or faithful):
        raise UserError(f"mask type {mask_type} needs a square image, got {H}x{W}")
    try:
        if mask_type == "poisson" and not faithful:
            calib = (int(H * center_fraction), int(W * center_fraction))
            mask = torch.from_numpy(masks.poisson_pattern((H, W), acc_factor, seed, calib))[None, None]
        else:
            mask = masks.get_mask(torch.zeros(1, 1, H, W), W, 1, type=mask_type, acc_factor=acc_factor,
                                  center_fraction=center_fraction, seed=seed, faithful=faithful)
    except ValueError as e:
        raise UserError(f"cannot build a {mask_type} mask: {e}".splitlines()[0]) from None
    mask = mask.float()
    if not mask.any():
        raise UserError("the mask samples nothing (lower --acc_factor)")
    return mask.expand(*shape[:-2], H, W).contiguous().to(device)


def to_image(x: torch.Tensor, real_valued: bool = False) -> np.ndarray:
    """A state [1, C, H, W] -> the image [H, W]: RSS over coils, real part (Algorithm 2) or complex."""
    x = x.detach().cpu()
    if x.shape[1] > 1:
        return root_sum_of_squares(x)[0].numpy()
    x = x[0, 0]
    return (x.real if (real_valued and x.is_complex()) else x).numpy()


def size_multiple(model: torch.nn.Module) -> int:
    """The factor both image sides must be divisible by for ``model`` (2**(levels - 1) for NCSN++; else 1)."""
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        levels = getattr(m, "num_resolutions", None)
        if levels is not None:
            return 2 ** (int(levels) - 1)
    config = getattr(model, "config", None)
    return 2 ** (len(config.model.ch_mult) - 1) if config is not None else 1


@dataclass
class Reconstruction:
    """The result of :func:`reconstruct`."""
    image: np.ndarray                 # [H, W] posterior mean (K = 1: the sample)
    std: np.ndarray | None            # [H, W] posterior standard deviation (K > 1)
    samples: np.ndarray               # [K, H, W]
    network_calls: int
    seconds: float
    info: dict = field(default_factory=dict)  # what the sampler decided from the data (``Result.info``)


def reconstruct(model: torch.nn.Module, sampler: str, op, y: torch.Tensor, settings: sampling.SamplerSettings,
                *, num_samples: int = 1, generator: torch.Generator | None = None,
                callback: Callable[[int, int, torch.Tensor], None] | None = None,
                inverse_scaler: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
                multiple: int | None = None) -> Reconstruction:
    """``num_samples`` posterior samples of the sampler ``sampler`` ('real', 'complex', 'ssos', ...).

    ``op`` is the algorithm's measurement operator, ``y`` [1, C, H, W] the measured k-space. The samples
    come from one generator stream; the image is their mean, ``std`` their spread (K > 1). Any H x W works:
    a side the model cannot take (``multiple``, default :func:`size_multiple` of the model) runs on a
    zero-padded grid (``physics.padding``) and the images come back H x W.
    """
    from score_mri.physics import padding
    fn = sampling.get_sampler(sampler)
    shape = tuple(y.shape[-2:])
    grid = padding.padded_shape(shape, size_multiple(model) if multiple is None else multiple)
    if grid != shape:  # run on a zero-padded grid the model takes; crop every image back
        if settings.faithful:
            raise UserError(f"--faithful (the original's numerics) needs sides divisible by the model's factor, got "
                             f"{shape[0]}x{shape[1]}")
        op, y = padding.pad_operator(op, grid), padding.pad(y, grid)
        if callback is not None:
            outer = callback
            callback = lambda i, n, x: outer(i, n, padding.crop(x, shape))  # noqa: E731
    samples, calls, info = [], 0, {}
    tic = time.time()
    with torch.no_grad():
        for _ in range(num_samples):
            result = fn(model, op, y, settings, generator=generator, callback=callback)
            calls += result.network_calls
            info = result.info                                             # the same data: the same decision
            samples.append(to_image(inverse_scaler(padding.crop(result.x, shape))))  # a real state stays real
    seconds = time.time() - tic
    stack = np.stack(samples)                                              # [K, H, W]
    if not np.all(np.isfinite(stack)):
        raise FloatingPointError("the reconstruction is not finite (NaN or Inf): nothing was written")
    std = stack.std(axis=0) if num_samples > 1 else None                   # complex: sqrt(mean |x - mean|^2)
    return Reconstruction(image=stack.mean(axis=0), std=std, samples=stack, network_calls=calls,
                          seconds=seconds, info=info)


def estimate_memory(config, shape: tuple[int, int], images_per_call: int) -> int:
    """Rough peak bytes of one network call on ``images_per_call`` images of ``shape`` (float32, no grad).

    Counts the U-Net's stored skip activations, a few full-resolution working tensors and the full
    self-attention matrix at the bottleneck (DDPM attention), plus the parameters.
    """
    H, W = shape
    nf, mult, n_res = int(config.model.nf), tuple(config.model.ch_mult), int(config.model.num_res_blocks)
    per_image = 6 * nf * mult[0] * H * W                                  # working tensors at full resolution
    for level, m in enumerate(mult):
        per_image += (n_res + 1) * nf * m * (H >> level) * (W >> level)    # skip connections kept for the decoder
    bottleneck = (H >> (len(mult) - 1)) * (W >> (len(mult) - 1))
    per_image += bottleneck * bottleneck                                  # attention weights [HW, HW]
    params = 4 * 2_500_000 * max(1, nf // 32) ** 2
    return 4 * per_image * images_per_call + params + (64 << 20)


def available_memory(device: str) -> int | None:
    """Bytes available on ``device`` (MemAvailable on the CPU, free memory on a GPU), None when unknown."""
    if device.startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:
            return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(config, shape: tuple[int, int], images_per_call: int, device: str) -> None:
    """Refuse (UserError) a run whose network call would not fit in the device's memory."""
    need, have = estimate_memory(config, shape, images_per_call), available_memory(device)
    if have is not None and need > have:
        raise UserError(f"a {shape[0]}x{shape[1]} reconstruction with {images_per_call} images per network call "
                        f"needs about {need / 2**30:.1f} GiB, {device} has {have / 2**30:.1f} GiB available "
                        f"(crop the input, or --skip_memory_check to try anyway)")
