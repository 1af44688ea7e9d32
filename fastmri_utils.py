"""The original's ``fastmri_utils`` module name: the centered FFTs of :mod:`score_mri.physics.fft`."""
from score_mri.physics.fft import *  # noqa: F401,F403
from score_mri.physics.fft import __all__  # noqa: F401
