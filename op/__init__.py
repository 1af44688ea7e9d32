"""Custom ops used by NCSN++ (StyleGAN2's upfirdn2d and fused leaky ReLU).

Importing this package never compiles anything: the CUDA kernels are built lazily, the first time a
CUDA tensor reaches them, and used only if they match the pure-PyTorch path; ``SCORE_MRI_CUDA_OPS``
(``auto`` | ``on`` | ``off``) overrides that choice (see ``op._jit``).
"""
from ._jit import CudaOpsError, CudaOpsWarning
from .fused_act import FusedLeakyReLU, fused_leaky_relu
from .upfirdn2d import upfirdn2d

__all__ = ["CudaOpsError", "CudaOpsWarning", "FusedLeakyReLU", "fused_leaky_relu", "upfirdn2d"]
