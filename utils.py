"""The original's ``utils`` module name: FFT conventions, operators, masks and helpers under their old names."""
from score_mri.physics import masks as _masks
from score_mri import utils as _utils
from score_mri.physics.fft import fft2_m, ifft2_m  # noqa: F401
from score_mri.physics.masks import *  # noqa: F401,F403
from score_mri.physics.operators import (SENSE, MultiCoilCartesian, SingleCoilCartesian, data_consistency,  # noqa: F401
                                         data_consistency_real, fft2, ifft2, kaczmarz_original)
from score_mri.utils import *  # noqa: F401,F403

__all__ = ["fft2", "ifft2", "fft2_m", "ifft2_m", "SingleCoilCartesian", "MultiCoilCartesian", "SENSE",
           "data_consistency", "data_consistency_real", "kaczmarz_original", *_masks.__all__, *_utils.__all__]
