"""The physics of the measurement: FFT conventions (``fft``), operators (``operators``), sampling masks
(``masks``), coil maps (``sens_maps``) and phase estimation (``phase``)."""
