"""The physics of the measurement: FFT conventions (``fft``), operators (``operators``), sampling masks
(``masks``), coil maps (``sens_maps``) and phase estimation (``phase``).

Fourier operators register themselves by name when their module is imported (``operators.register_fourier``);
the import lines below are their registration: a new operator module adds one.
"""
from score_mri.physics import operators  # noqa: F401  (registers 'cartesian' and 'cartesian_single')
