"""Exponential moving average of model parameters (score_sde_pytorch's ``models/ema.py`` format).

The state dict is ``{'decay', 'num_updates', 'shadow_params'}`` with ``shadow_params`` a list of
tensors, one per parameter with ``requires_grad=True``, in ``parameters()`` order (the frozen
Fourier frequencies are not included).
"""
from __future__ import annotations

from typing import Iterable

import torch


class ExponentialMovingAverage:
    """Shadow copy s <- s - (1 - decay) * (s - p), decay = min(decay, (1 + n) / (10 + n))."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], decay: float,
                 use_num_updates: bool = True):
        if decay < 0.0 or decay > 1.0:
            raise ValueError("Decay must be between 0 and 1")
        self.decay = decay
        self.num_updates = 0 if use_num_updates else None
        self.shadow_params = [p.clone().detach() for p in parameters if p.requires_grad]
        self.collected_params: list[torch.Tensor] = []

    def update(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Move the shadows towards the current parameters (call after every optimizer step)."""
        decay = self.decay
        if self.num_updates is not None:
            self.num_updates += 1
            decay = min(decay, (1 + self.num_updates) / (10 + self.num_updates))
        one_minus_decay = 1.0 - decay
        with torch.no_grad():
            parameters = [p for p in parameters if p.requires_grad]
            for s_param, param in zip(self.shadow_params, parameters):
                s_param.sub_(one_minus_decay * (s_param - param))

    def copy_to(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Overwrite the trainable parameters with the shadow (EMA) values."""
        parameters = [p for p in parameters if p.requires_grad]
        with torch.no_grad():
            for s_param, param in zip(self.shadow_params, parameters):
                param.copy_(s_param)

    def store(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Save the current parameters, to be put back with ``restore``."""
        self.collected_params = [param.detach().clone() for param in parameters]

    def restore(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Restore the parameters saved by ``store`` (e.g. after sampling with EMA weights)."""
        with torch.no_grad():
            for c_param, param in zip(self.collected_params, parameters):
                param.copy_(c_param)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "ExponentialMovingAverage":
        """Move the shadow parameters (e.g. after loading a checkpoint on another device)."""
        self.shadow_params = [s.to(device=device, dtype=dtype) for s in self.shadow_params]
        return self

    def state_dict(self) -> dict:
        """{'decay', 'num_updates', 'shadow_params'} as in the original checkpoints."""
        return dict(decay=self.decay, num_updates=self.num_updates,
                    shadow_params=self.shadow_params)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict; shadows keep the device/dtype of the current ones when they exist."""
        shadows = list(state_dict["shadow_params"])
        if self.shadow_params:
            if len(shadows) != len(self.shadow_params):
                raise ValueError(f"EMA state has {len(shadows)} shadow parameters, "
                                 f"expected {len(self.shadow_params)}")
            for i, (new, old) in enumerate(zip(shadows, self.shadow_params)):
                if tuple(new.shape) != tuple(old.shape):
                    raise ValueError(f"EMA shadow parameter {i} has shape {tuple(new.shape)}, "
                                     f"expected {tuple(old.shape)}")
            shadows = [new.detach().to(device=old.device, dtype=old.dtype).clone()
                       for new, old in zip(shadows, self.shadow_params)]
        self.decay = state_dict["decay"]
        self.num_updates = state_dict["num_updates"]
        self.shadow_params = shadows
