"""score-MRI: score-based diffusion models for accelerated MRI (Chung & Ye 2022).

Three lines from k-space to an image::

    import numpy as np, score_mri
    kspace = score_mri.fft2c(np.load("samples/single-coil/001.npy")) * score_mri.simulate_mask((320, 320))
    result = score_mri.reconstruct(kspace)        # result.image, result.network_calls, result.seconds

The parts: :mod:`score_mri.physics` (operators, FFTs, masks, coil maps, phase), :mod:`score_mri.samplers` (the
predictor-corrector loop, its steps, the algorithms and the one sampler table), :mod:`score_mri.io` (readers
and result files), :mod:`score_mri.recon` (the reconstruction entry the CLIs share), :mod:`score_mri.cli`
(the command lines) and :mod:`score_mri.training`.
"""
from __future__ import annotations

from score_mri.api import Result, fft2c, ifft2c, load_prior, reconstruct, simulate_mask
from score_mri.errors import UserError
from score_mri.samplers.pc_loop import SamplerSettings
from score_mri.samplers.table import SAMPLERS, get_sampler

__version__ = "0.2.0"

__all__ = ["reconstruct", "simulate_mask", "Result", "fft2c", "ifft2c", "load_prior", "SamplerSettings",
           "SAMPLERS", "get_sampler", "UserError", "__version__"]
