"""Custom ops used by NCSN++ (StyleGAN2's upfirdn2d and fused leaky ReLU).

Importing this package never compiles anything: the CUDA kernels are built lazily, the first time a
CUDA tensor reaches them (see ``op.upfirdn2d`` / ``op.fused_act``).
"""
from .fused_act import FusedLeakyReLU, fused_leaky_relu
from .upfirdn2d import upfirdn2d

__all__ = ["FusedLeakyReLU", "fused_leaky_relu", "upfirdn2d"]
