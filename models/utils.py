"""Model registry and the wrappers that turn a network into a score function s(x, t).

For the continuous VE-SDE (Song et al. 2021, Eq. 30; Chung & Ye 2022, Sec. 2) the network is
conditioned on sigma(t) = sigma_min * (sigma_max / sigma_min)^t and returns the score directly
(NCSN++ divides its output by sigma itself, ``scale_by_sigma``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from models.precision import model_autocast
from models.registry import lookup, registrar

_MODELS: dict[str, type] = {}


register_model = registrar(_MODELS, "model")


def get_model(name: str) -> type:
    """The model class registered under ``name``."""
    return lookup(_MODELS, "model", name)


def get_sigmas(config) -> np.ndarray:
    """SMLD noise levels: exp(linspace(log sigma_max, log sigma_min, num_scales)), descending, float64."""
    return np.exp(np.linspace(np.log(config.model.sigma_max), np.log(config.model.sigma_min),
                              config.model.num_scales))


def config_device(config):
    """``config.device`` if the config defines one, else None."""
    try:
        return config.device if "device" in config else None
    except TypeError:
        return getattr(config, "device", None)


def create_model(config, device=None) -> torch.nn.Module:
    """Build the score model named by ``config.model.name`` on ``device`` (else config.device, else CPU).

    Unlike score_sde_pytorch the model is NOT wrapped in DataParallel (checkpoint keys stay
    un-prefixed; ``models.checkpoint`` strips a ``module.`` prefix when loading).
    """
    # Importing the package registers NCSN++ (so `models.utils` can be imported on its own).
    import models  # noqa: F401

    model = get_model(config.model.name)(config)
    device = device if device is not None else config_device(config)
    if device is not None:
        model = model.to(device)
    return model


def get_model_fn(model: torch.nn.Module, train: bool = False) -> Callable:
    """``model_fn(x, labels)`` running the model in train or eval mode."""

    def model_fn(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model.train(train)
        if train:
            return model(x, labels)
        with model_autocast(model, x):  # bf16 for a model marked so (score_mri.perf sets the mark), else a no-op
            out = model(x, labels)
        return out.to(x.dtype)  # the sampler's arithmetic stays in the input's precision

    return model_fn


def get_score_fn(sde, model: torch.nn.Module, train: bool = False,
                 continuous: bool = False) -> Callable:
    """Score function s(x, t) of a trained model for the given SDE.

    VE-SDE (the only SDE of this project): continuous -> labels = sigma(t) (the marginal std);
    discrete -> labels = round((T - t) * (N - 1)), an index into the descending ``sigmas``
    (t = T is sigma_max). Other SDE classes raise NotImplementedError.
    """
    model_fn = get_model_fn(model, train=train)

    if type(sde).__name__ == "VESDE" or hasattr(sde, "discrete_sigmas"):  # VE-SDE, named without importing it
        def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if continuous:
                labels = sde.marginal_prob(torch.zeros_like(x), t)[1]  # sigma(t), [B]
            else:
                labels = torch.round((sde.T - t) * (sde.N - 1)).long()
            return model_fn(x, labels)

    else:
        raise NotImplementedError(f"SDE class {type(sde).__name__} not yet supported.")

    return score_fn


def to_flattened_numpy(x: torch.Tensor) -> np.ndarray:
    """Flatten a tensor into a 1-D numpy array."""
    return x.detach().cpu().numpy().reshape((-1,))


def from_flattened_numpy(x: np.ndarray, shape) -> torch.Tensor:
    """Reshape a flat numpy array into a tensor of ``shape``."""
    return torch.from_numpy(x.reshape(shape))
