"""The original's ``sde_lib`` module name: the SDEs of :mod:`score_mri.sde`."""
from score_mri.sde import *  # noqa: F401,F403
from score_mri.sde import __all__  # noqa: F401
