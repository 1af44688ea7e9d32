"""The original's ``sampling`` module name: the samplers of :mod:`score_mri.samplers` (one table, ``SAMPLERS``)."""
from score_mri.samplers import *  # noqa: F401,F403
from score_mri.samplers import __all__  # noqa: F401
