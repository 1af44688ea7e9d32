"""Training objective and optimisation step for score-based models (Song et al. 2021; Chung & Ye 2022).

Denoising score matching for the continuous VE-SDE (Song et al. 2021, Eq. 7; Chung & Ye 2022, Eq. 5):

    t ~ U(eps, 1),  z ~ N(0, I),  x_t = x + sigma(t) * z,
    loss = E_x [ 0.5 * sum_pixels (sigma(t) * s_theta(x_t, t) + z)^2 ]

(``reduce_mean=True`` replaces ``0.5 * sum`` by the pixel mean, as the original does). All random
draws (t, z) come from an explicit ``torch.Generator`` held in the training state, so that a run
resumed from a snapshot reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterable

import torch

from score_mri import sde as sde_lib
from models import utils as mutils

EPS_T = 1e-5  # smallest diffusion time drawn during training (the original code)


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss or the gradient norm is NaN/Inf (no optimizer step is taken)."""


def get_optimizer(config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam(lr, betas=(beta1, 0.999), eps, weight_decay) as in the original configs."""
    if config.optim.optimizer != "Adam":
        raise ValueError(f"config.optim.optimizer={config.optim.optimizer!r} is not supported (only 'Adam')")
    return torch.optim.Adam(params, lr=config.optim.lr, betas=(config.optim.beta1, 0.999),
                            eps=config.optim.eps, weight_decay=config.optim.weight_decay)


def optimization_manager(config) -> Callable:
    """Return ``optimize_fn(optimizer, params, step)``: linear lr warm-up, grad-norm clipping, Adam step.

    The learning rate is ``lr * min(step / warmup, 1)`` with ``step`` the count *before* this update
    (so the very first update has lr 0, as in the original). Gradients are clipped to ``grad_clip``
    when it is >= 0. A non-finite gradient norm raises ``NonFiniteLossError`` before ``optimizer.step``,
    which keeps the weights (and every rank of a DDP run, since gradients are all-reduced) intact.
    """

    def optimize_fn(optimizer: torch.optim.Optimizer, params, step: int, lr: float = config.optim.lr,
                    warmup: int = config.optim.warmup, grad_clip: float = config.optim.grad_clip) -> torch.Tensor:
        params = [p for p in params if p.grad is not None]
        if warmup > 0:
            for g in optimizer.param_groups:
                g["lr"] = lr * min(step / warmup, 1.0)
        max_norm = grad_clip if grad_clip >= 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(f"non-finite gradient norm ({grad_norm.item()}) at step {step}")
        optimizer.step()
        return grad_norm

    return optimize_fn


def _autocast(enabled: bool, device_type: str):
    """bf16 autocast context (CPU or CUDA), or a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


def get_sde_loss_fn(sde: sde_lib.SDE, train: bool, reduce_mean: bool = True, continuous: bool = True,
                    likelihood_weighting: bool = False, eps: float = EPS_T, bf16: bool = False) -> Callable:
    """Return ``loss_fn(model, batch, generator) -> scalar``: denoising score matching (Song et al. 2021, Eq. 7)."""
    if likelihood_weighting:
        raise NotImplementedError("likelihood_weighting=True is not supported (the score-MRI training uses False)")
    if not continuous:
        raise NotImplementedError("only continuous-time training is supported (config.training.continuous=True)")
    if not isinstance(sde, sde_lib.VESDE):
        raise NotImplementedError(f"training supports the VE-SDE only, got {type(sde).__name__}")

    def loss_fn(model: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = batch  # [B, C, H, W]
        B = x.shape[0]
        # Draws on the generator's device (CPU), then moved: identical numbers on CPU and GPU runs.
        t = torch.rand(B, generator=generator, dtype=torch.float32) * (sde.T - eps) + eps  # [B]
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32)  # [B, C, H, W]
        t, z = t.to(x.device), z.to(device=x.device, dtype=x.dtype)
        x_mean, sigma = sde.marginal_prob(x, t)  # VE: x_mean = x, sigma = sigma(t) [B]
        x_t = x_mean + sigma[:, None, None, None] * z
        score_fn = mutils.get_score_fn(sde, model, train=train, continuous=continuous)
        with _autocast(bf16, x.device.type):
            score = score_fn(x_t, t)
        score = score.float() if bf16 else score
        residual = (sigma[:, None, None, None] * score + z).reshape(B, -1) ** 2  # [B, C*H*W]
        losses = residual.mean(dim=-1) if reduce_mean else 0.5 * residual.sum(dim=-1)  # [B]
        return losses.mean()

    return loss_fn


def get_step_fn(sde: sde_lib.SDE, train: bool, optimize_fn: Callable | None = None, reduce_mean: bool = False,
                continuous: bool = True, likelihood_weighting: bool = False, *, bf16: bool = False) -> Callable:
    """Return ``step_fn(state, batch) -> loss``: one training step (or one EMA evaluation when ``train=False``).

    ``state`` holds ``model``, ``optimizer``, ``ema``, ``step`` (int) and ``generator`` (torch.Generator
    for t and z). A training step raises ``NonFiniteLossError`` on a NaN/Inf loss or gradient, before
    the weights change; otherwise it updates the weights, increments ``step`` and updates the EMA.
    """
    loss_fn = get_sde_loss_fn(sde, train, reduce_mean=reduce_mean, continuous=continuous,
                              likelihood_weighting=likelihood_weighting, bf16=bf16)

    def step_fn(state: dict, batch: torch.Tensor) -> torch.Tensor:
        model = state["model"]
        if train:
            optimizer = state["optimizer"]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch, state["generator"])
            loss.backward()  # before the check: under DDP every rank must join the gradient all-reduce
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite loss ({loss.item()}) at step {state['step']}")
            optimize_fn(optimizer, model.parameters(), step=state["step"])
            state["step"] += 1
            state["ema"].update(model.parameters())
        else:
            with torch.no_grad():
                ema = state["ema"]
                ema.store(model.parameters())
                ema.copy_to(model.parameters())
                try:
                    loss = loss_fn(model, batch, state["generator"])
                finally:
                    ema.restore(model.parameters())
        return loss.detach()

    return step_fn
