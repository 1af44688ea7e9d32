"""Lazy JIT build of the CUDA extensions (ninja via ``torch.utils.cpp_extension.load``)."""
from __future__ import annotations

import os
import warnings

import torch

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))

# dtypes the compiled kernels accept (others use the native path).
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def build_extension(name: str, sources: list[str], label: str):
    """Compile/load extension ``name`` from ``op/<sources>``; None (with one warning) when that fails.

    Only called once a CUDA tensor reaches an op: importing ``op`` never imports the build machinery.
    """
    if not torch.cuda.is_available():
        return None
    try:
        from torch.utils.cpp_extension import load  # deferred: never imported on CPU-only use

        return load(name, sources=[os.path.join(MODULE_DIR, s) for s in sources], verbose=False)
    except Exception as exc:  # noqa: BLE001 - any build failure falls back to the native path
        first = str(exc).splitlines()[0] if str(exc) else ""
        warnings.warn(f"{label}: CUDA extension unavailable ({type(exc).__name__}: {first}); "
                      "using the PyTorch path.", RuntimeWarning, stacklevel=4)
        return None
