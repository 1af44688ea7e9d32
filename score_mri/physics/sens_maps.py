"""ESPIRiT coil maps from the measured calibration region, cached per input for the multi-coil scripts."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from score_mri.errors import UserError
from score_mri.physics.masks import calib_width, espirit_kernel


def espirit(ksp: np.ndarray, width: int) -> np.ndarray:
    """sigpy ``EspiritCalib`` maps [C, H, W] (complex64) from k-space [C, H, W], calibration width ``width``.

    The kernel is sigpy's default 6 for widths of 12 or more, narrower for the small calibration regions
    of Poisson-disc and variable-density masks (``masks.espirit_kernel``).
    """
    import sigpy.mri as mr
    return mr.app.EspiritCalib(ksp, calib_width=width, kernel_width=espirit_kernel(width),
                               show_pbar=False).run().astype(np.complex64)


def unit_peak(maps: torch.Tensor, tol: float = 1e-3) -> tuple[torch.Tensor, float]:
    """Coil maps [..., C, H, W] rescaled so that their root-sum-of-squares over coils peaks at 1, and the factor
    they were divided by (1.0, maps unchanged, when the peak is within ``tol`` of 1).

    ESPIRiT maps are unit-norm inside the object; the SENSE image x of A x = M F (S x) then has the intensity
    of the coil-combined image, the scale the prior was trained at and the noise weighting assumes. A global
    factor c on the maps divides x by c; a spatially varying weighting of the maps is kept.
    """
    peak = float(torch.sqrt((maps.abs() ** 2).sum(dim=-3)).max())
    if not peak > 0 or abs(peak - 1.0) <= tol:
        return maps, 1.0
    return maps / peak, peak


def coil_maps(ctx, from_full: bool = False) -> torch.Tensor:
    """ESPIRiT maps [1, C, H, W] of a CLI run, cached in <save_dir>/<kind>/sens/{name}.npy keyed by input and mask.

    By default the maps come from the measured (masked) k-space, calibrated on its fully sampled centre;
    ``from_full`` calibrates on the fully sampled k-space as the original did (leaks the ground truth).
    """
    from score_mri.physics.fft import fft2c

    p = ctx.problem
    if from_full and p.task != "retrospective":
        raise UserError("--espirit_from_full needs a fully sampled (retrospective) input")
    mask2d = ctx.mask[0, 0].cpu().numpy()
    key = json.dumps({"input": str(p.source.resolve()), "name": p.name, "shape": list(p.image.shape),
                      "mask_sha1": hashlib.sha1(mask2d.tobytes()).hexdigest(), "from_full": bool(from_full)},
                     sort_keys=True)
    cache, cache_key = ctx.root / "sens" / f"{p.name}.npy", ctx.root / "sens" / f"{p.name}.json"
    if cache.is_file() and cache_key.is_file() and cache_key.read_text().strip() == key:
        sens = np.load(cache)
    else:
        if from_full:  # the original's behaviour (default calibration width 24)
            ksp, width = fft2c(torch.from_numpy(p.image)).numpy(), 24               # [C, H, W]
        else:
            ksp = ctx.y[0].cpu().numpy()                                            # [C, H, W] measured
            try:  # only the fully sampled centre: a wider block would include unmeasured zeros
                width = calib_width(mask2d)
            except ValueError as e:
                raise UserError(str(e)) from None
        sens = espirit(ksp, width)
        ctx.extra_outputs[f"sens/{p.name}.npy"] = sens
        ctx.extra_outputs[f"sens/{p.name}.json"] = key + "\n"
    return torch.from_numpy(sens)[None].to(ctx.y.device)                            # [1, C, H, W]
