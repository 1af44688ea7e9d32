"""The inference-precision mark of a model and the autocast context of its network calls.

``score_mri.perf.set_inference_precision`` sets the mark; ``models.utils.get_model_fn`` runs each inference
call inside :func:`model_autocast`.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISION_ATTR", "model_precision", "model_autocast"]

PRECISION_ATTR = "inference_precision"  # attribute of a model: 'bf16' or 'fp32'


def model_precision(model: torch.nn.Module) -> str | None:
    """The precision the model was marked with (None when it has none)."""
    return getattr(model, PRECISION_ATTR, None)


def model_autocast(model: torch.nn.Module, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``x``'s device when ``model`` is marked 'bf16', else a no-op context."""
    if model_precision(model) != "bf16" or x.device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16)
