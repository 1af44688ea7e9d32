"""Helpers of the original's ``utils``: normalisation, lambda schedules and data scalers.

The FFT conventions live in ``score_mri.physics.fft``, the operators in ``score_mri.physics.operators`` and the
masks in ``score_mri.physics.masks``; the top-level ``utils.py`` re-exports all of them under the original's names.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

__all__ = [
    "root_sum_of_squares", "crop_center", "clear",
    "normalize", "normalize_np", "normalize_complex", "normalize_complex_original",
    "lambda_schedule", "lambda_schedule_linear", "lambda_schedule_const",
    "get_data_scaler", "get_data_inverse_scaler", "restore_checkpoint",
]


def root_sum_of_squares(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares coil combination sqrt(sum_c |x_c|^2) (fix: the original squares complex values)."""
    return torch.sqrt(torch.sum(torch.abs(x) ** 2, dim=dim))


def crop_center(img: torch.Tensor | np.ndarray, cropx: int, cropy: int):
    """Central crop [..., cropy, cropx] of an image [..., H, W]."""
    y, x = img.shape[-2:]
    startx = x // 2 - cropx // 2
    starty = y // 2 - cropy // 2
    return img[..., starty:starty + cropy, startx:startx + cropx]


def clear(x: torch.Tensor) -> np.ndarray:
    """Detached, squeezed NumPy copy of a tensor (for saving images)."""
    return x.detach().cpu().squeeze().numpy()


def normalize(img: torch.Tensor) -> torch.Tensor:
    """Affine map of a real tensor to [0, 1] over all its entries (a constant tensor maps to 0)."""
    img = img - torch.min(img)
    peak = torch.max(img)
    return img / peak if peak > 0 else torch.zeros_like(img)


def normalize_np(img: np.ndarray) -> np.ndarray:
    """NumPy version of :func:`normalize`."""
    img = img - np.min(img)
    peak = np.max(img)
    return img / peak if peak > 0 else np.zeros_like(img)


def normalize_complex(img: torch.Tensor) -> torch.Tensor:
    """Map the magnitude of a complex image to [0, 1] ((|x| - min) / (max - min)) and keep the phase (fix)."""
    magnitude = normalize(torch.abs(img))
    return magnitude * torch.sgn(img)


def normalize_complex_original(img: torch.Tensor) -> torch.Tensor:
    """The original's normalize_complex, which also squashes the phase into [0, 1] rad (faithful record)."""
    magnitude = normalize(torch.abs(img))
    phase = normalize(torch.angle(img))
    return magnitude * torch.exp(1j * phase)


# ----------------------------------------------------------------------------------------------------------
# Lambda schedules for the Kaczmarz step of Algorithm 5
# ----------------------------------------------------------------------------------------------------------

class lambda_schedule:
    """Step size lambda_i of the Kaczmarz update as a function of the iteration i (total iterations ``total``)."""

    def __init__(self, total: int = 2000):
        self.total = total

    def get_current_lambda(self, i: int) -> float:
        """lambda at iteration i."""
        raise NotImplementedError


class lambda_schedule_linear(lambda_schedule):
    """Linear schedule from start_lamb at i = 0 to end_lamb at i = total.

    The original always used total = 2000, so with N = 500 iterations lambda only falls to 0.8; pass
    ``total=N`` for the intended schedule.
    """

    def __init__(self, start_lamb: float = 1.0, end_lamb: float = 0.2, total: int = 2000):
        super().__init__(total)
        self.start_lamb = start_lamb
        self.end_lamb = end_lamb

    def get_current_lambda(self, i: int) -> float:
        """start + (end - start) * i / total."""
        return self.start_lamb + (self.end_lamb - self.start_lamb) * (i / self.total)


class lambda_schedule_const(lambda_schedule):
    """Constant schedule lambda_i = lamb."""

    def __init__(self, lamb: float = 1.0, total: int = 2000):
        super().__init__(total)
        self.lamb = lamb

    def get_current_lambda(self, i: int) -> float:
        """The constant lamb."""
        return self.lamb


# ----------------------------------------------------------------------------------------------------------
# Data scalers and checkpoints
# ----------------------------------------------------------------------------------------------------------

def get_data_scaler(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map data in [0, 1] to the model's range: [-1, 1] (2x - 1) when config.data.centered, else identity."""
    if config.data.centered:
        return lambda x: x * 2. - 1.
    return lambda x: x


def get_data_inverse_scaler(config: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """Inverse of :func:`get_data_scaler`: (x + 1) / 2 when config.data.centered, else identity."""
    if config.data.centered:
        return lambda x: (x + 1.) / 2.
    return lambda x: x


def restore_checkpoint(*args: Any, **kwargs: Any) -> Any:
    """Load a checkpoint: thin re-export of ``models.checkpoint.load_checkpoint`` (imported lazily)."""
    from models.checkpoint import load_checkpoint
    return load_checkpoint(*args, **kwargs)
