"""Training loop for the score prior (Song et al. 2021; Chung & Ye 2022, Eq. 5).

``train(config, workdir)`` runs denoising score matching for ``config.training.n_iters`` steps with
resumable, atomic snapshots; ``eval_lib.evaluate(config, workdir, eval_folder)`` reports the held-out loss of
saved checkpoints (EMA weights) and optionally draws unconditional samples (Algorithm 1).

Multi-process training: launched by torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment)
each rank trains on its own shard of the slices under DistributedDataParallel (gloo on CPU, nccl on
GPU); only rank 0 writes logs and checkpoints, and a snapshot holds every rank's random states.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from score_mri.training import datasets
from score_mri.training import losses
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from score_mri.errors import UserError  # noqa: F401  (re-exported: main_fastmri reports it in one line)
from score_mri.process_group import ProcessGroup
from score_mri.utils import get_data_scaler
from score_mri.training.state import (TRAIN_DEFAULTS, Log, build, numbered_checkpoints, record_config,  # noqa: F401
                                      sample_to_dir, train_option)

# ----------------------------------------------------------------------------------------------
# Set-up helpers
# ----------------------------------------------------------------------------------------------

class _Dist(ProcessGroup):
    """The training job's process group plus its device (nccl on GPUs, gloo on the CPU)."""

    def __init__(self, config):
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        want = config.get("device", None)
        use_cuda = torch.cuda.is_available() and (want is None or str(want).startswith("cuda"))
        self.device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        if use_cuda and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            torch.cuda.set_device(self.device)
        super().__init__("nccl" if use_cuda else "gloo")

    def broadcast_flags(self, *flags: bool) -> list[bool]:
        """Rank 0's values of ``flags`` on every rank (identity in a single process)."""
        if not self.active:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], dtype=torch.int64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, src=0)
        return [bool(v) for v in t.tolist()]

    def mean(self, x: float) -> float:
        """Average of a float over ranks."""
        if not self.active:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.item() / self.world_size


def _check_config(config) -> None:
    """Reject configurations this trainer cannot run, with a one-line reason."""
    t = config.training
    n_iters, epochs = train_option(config, "n_iters"), t.get("epochs", 0)
    if not (n_iters or 0) > 0 and not (epochs or 0) > 0:
        raise UserError("set config.training.n_iters (steps) or config.training.epochs to a positive number")
    if int(t.batch_size) < 1:
        raise UserError(f"config.training.batch_size must be >= 1, got {t.batch_size}")
    if train_option(config, "sde").lower() != "vesde":
        raise UserError(f"config.training.sde={t.sde!r}: only 'vesde' is supported")
    if not train_option(config, "continuous"):
        raise UserError("config.training.continuous=False is not supported (continuous VE-SDE training only)")
    if train_option(config, "likelihood_weighting"):
        raise UserError("config.training.likelihood_weighting=True is not supported")
    if int(config.data.num_channels) != 1:
        raise UserError(f"config.data.num_channels must be 1 (magnitude slices), got {config.data.num_channels}")
    levels = len(config.model.ch_mult)
    if int(config.data.image_size) % (2 ** (levels - 1)) != 0:
        raise UserError(f"config.data.image_size={config.data.image_size} must be divisible by "
                        f"2^(len(ch_mult)-1)={2 ** (levels - 1)}")
    for k in ("snapshot_freq", "snapshot_freq_for_preemption", "log_freq"):
        if int(train_option(config, k)) < 1:
            raise UserError(f"config.training.{k} must be >= 1")


def _load_training_state(path: Path, model, ema, optimizer, device) -> dict:
    """Restore raw weights, EMA and optimizer from a snapshot; return the loaded dict (step, rng, ...)."""
    return load_checkpoint(str(path), model, ema=ema, optimizer=optimizer, device=device, copy_ema_to_model=False)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

def train(config, workdir: str) -> dict:
    """Train the score model (denoising score matching, Song et al. 2021) and return the final state.

    Resumes from ``<workdir>/checkpoints-meta/checkpoint.pth`` when present. Returns a dict with the
    (unwrapped) ``model``, ``ema``, ``step`` and the last logged ``loss``.
    """
    _check_config(config)
    workdir = Path(workdir)
    ddp = _Dist(config)
    try:
        result = _train(config, workdir, ddp)
        # Rank 0 writes the last snapshot after the final collective: leave together, so that no rank tears
        # down its connections while another one still runs (on failure the group is simply destroyed).
        ddp.barrier()
        return result
    finally:
        ddp.close()


def _train(config, workdir: Path, ddp: _Dist) -> dict:
    log_freq = int(train_option(config, "log_freq"))
    snapshot_freq = int(train_option(config, "snapshot_freq"))
    preempt_freq = int(train_option(config, "snapshot_freq_for_preemption"))
    snapshot_seconds = 60.0 * float(train_option(config, "snapshot_minutes"))
    eval_freq = int(train_option(config, "eval_freq") or 0)
    device = ddp.device

    ckpt_dir, meta_path = workdir / "checkpoints", workdir / "checkpoints-meta" / "checkpoint.pth"
    if ddp.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
    log = Log(workdir, ddp.is_main)

    # Data: each rank its own shard and its own augmentation stream (seed + rank).
    train_iter, eval_ds = datasets.get_dataset(config, rank=ddp.rank, world_size=ddp.world_size)
    eval_iter = (datasets.BatchIterator(eval_ds, config.training.batch_size, seed=int(config.seed) + 10_000 + ddp.rank,
                                        augment=False) if (eval_freq > 0 and len(eval_ds) > 0) else None)

    n_iters = int(train_option(config, "n_iters") or 0)
    if n_iters <= 0:  # the original's budget: epochs over the training slices (all ranks together)
        per_step = int(config.training.batch_size) * ddp.world_size
        n_iters = int(config.training.epochs) * math.ceil(train_iter.n_total / per_step)

    if ddp.is_main:
        record_config(config, workdir, meta_path.exists(), log)
    model, ema, optimizer, sde = build(config, device)
    generator = torch.Generator().manual_seed(int(config.seed) + ddp.rank)  # t and z of the loss
    eval_generator = torch.Generator().manual_seed(int(config.seed) + 10_000 + ddp.rank)
    step = 0
    if meta_path.exists():
        try:
            loaded = _load_training_state(meta_path, model, ema, optimizer, device)
        except CheckpointError as e:
            raise UserError(f"cannot resume from {meta_path}: {e}; {_fallback_hint(workdir)}") from None
        step = int(loaded["step"])
        rng = loaded.get("rng")
        if rng is not None and int(rng["world_size"]) == ddp.world_size:
            generator.set_state(rng["generators"][ddp.rank])
            try:
                train_iter.load_state_dict(rng["data"][ddp.rank])
            except ValueError as e:
                log(f"warning: data stream not restored ({e}); continuing with a fresh shuffle")
            if eval_iter is not None and rng.get("eval_data") is not None:
                eval_iter.load_state_dict(rng["eval_data"][ddp.rank])
                eval_generator.set_state(rng["eval_generators"][ddp.rank])
        else:
            # different number of processes: continue with fresh streams derived from the step
            generator.manual_seed(int(config.seed) + ddp.rank + 1_000_003 * step)
            train_iter.rng = np.random.default_rng([int(config.seed) + ddp.rank, step])
            log("warning: snapshot random states are for a different number of processes; reseeded")
        rate = float(config.model.ema_rate)
        if ema.decay != rate:  # the config in hand decides (e.g. a longer average for a low-lr finishing run)
            log(f"EMA rate {ema.decay} of the snapshot -> {rate} of the config")
            ema.decay = rate
        log(f"resumed from {meta_path} at step {step}")
    elif train_option(config, "init_from"):
        init = str(train_option(config, "init_from"))
        try:
            load_checkpoint(init, model, ema=ema, device=device, copy_ema_to_model=False)
        except CheckpointError as e:
            raise UserError(f"cannot warm-start from {init}: {e}") from None
        log(f"warm start from {init} (weights only; optimizer and step start afresh)")

    net = model
    if ddp.active:
        # the only buffer (sigmas) is constant: no per-forward buffer sync
        import inspect
        DDP = torch.nn.parallel.DistributedDataParallel
        sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else {"broadcast_buffers": False})
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **sync)
    state = dict(model=net, ema=ema, optimizer=optimizer, step=step, generator=generator)
    eval_state = dict(model=model, ema=ema, step=step, generator=eval_generator)

    bf16 = bool(train_option(config, "bf16"))
    common = dict(reduce_mean=train_option(config, "reduce_mean"), continuous=True, likelihood_weighting=False,
                  bf16=bf16)
    train_step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config), **common)
    eval_step_fn = losses.get_step_fn(sde, train=False, **common)
    scaler = get_data_scaler(config)

    def snapshot(numbered: bool, meta: bool) -> None:
        """Gather every rank's random states; rank 0 writes the requested checkpoints atomically."""
        rng = {"world_size": ddp.world_size,
               "generators": ddp.gather(generator.get_state()),
               "data": ddp.gather(train_iter.state_dict()),
               "eval_generators": ddp.gather(eval_generator.get_state()),
               "eval_data": ddp.gather(eval_iter.state_dict()) if eval_iter is not None else None}
        if not ddp.is_main:
            return
        ckpt = {"model": model, "ema": ema, "optimizer": optimizer, "step": state["step"], "rng": rng,
                "epoch": train_iter.epoch}
        if meta:
            save_checkpoint(str(meta_path), ckpt)
        if numbered:
            save_checkpoint(str(ckpt_dir / f"checkpoint_{state['step'] // snapshot_freq}.pth"), ckpt)

    # SIGTERM / first Ctrl-C: finish the current step, write the preemption snapshot, stop.
    stop_requested = {"flag": False}
    old_handlers = {}

    def _request_stop(signum, frame):
        stop_requested["flag"] = True
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, old_handlers.get(signal.SIGINT, signal.default_int_handler))

    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            old_handlers[s] = signal.signal(s, _request_stop)

    from tqdm import tqdm
    pbar = tqdm(total=n_iters, initial=step, disable=not ddp.is_main, dynamic_ncols=True, mininterval=1.0,
                desc="train")
    if ddp.is_main:
        log(f"training {sum(p.numel() for p in model.parameters())} parameters on {device} "
            f"x{ddp.world_size}, {len(train_iter.dataset)} training slices (rank 0), steps {step} -> {n_iters}")
    last_snapshot = time.monotonic()
    t_log, step_log = time.monotonic(), step
    loss_value = float("nan")
    try:
        while state["step"] < n_iters:
            batch = scaler(next(train_iter).to(device))  # [B, 1, H, W]
            try:
                loss = train_step_fn(state, batch)
            except losses.NonFiniteLossError as e:
                log(f"error: {e}; stopping without writing a checkpoint")
                raise
            step = state["step"]
            eval_state["step"] = step
            pbar.update(1)
            if step % log_freq == 0:
                loss_value = ddp.mean(loss.item())
                now = time.monotonic()
                rate = (step - step_log) / max(now - t_log, 1e-9)
                t_log, step_log = now, step
                log(f"step: {step}, training_loss: {loss_value:.5e}, steps/s: {rate:.3f}")
                pbar.set_postfix(loss=f"{loss_value:.4g}")
            if eval_iter is not None and step % eval_freq == 0:
                eval_loss = ddp.mean(eval_step_fn(eval_state, scaler(next(eval_iter).to(device))).item())
                log(f"step: {step}, eval_loss: {eval_loss:.5e}")
            timed, stop = ddp.broadcast_flags(time.monotonic() - last_snapshot >= snapshot_seconds,
                                              stop_requested["flag"])
            numbered = step % snapshot_freq == 0
            meta = step % preempt_freq == 0 or timed or stop or step == n_iters
            if numbered or meta:
                snapshot(numbered, meta)
                last_snapshot = time.monotonic()
                if numbered and ddp.is_main and train_option(config, "snapshot_sampling"):
                    sample_to_dir(config, model, ema, sde, workdir / "samples" / f"iter_{step}",
                                   n=int(config.training.batch_size), log=log)
            if stop:
                log(f"stop requested: snapshot written at step {step}")
                break
    finally:
        pbar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    return {"model": model, "ema": ema, "step": state["step"], "loss": loss_value}


def _fallback_hint(workdir: Path) -> str:
    """What a failed resume can fall back to: the numbered checkpoints (same layout as the snapshot), oldest first."""
    numbered = numbered_checkpoints(workdir)
    if not numbered:
        return f"no numbered checkpoint to fall back to in {workdir / 'checkpoints'}"
    names = ", ".join(numbered[n].relative_to(workdir).as_posix() for n in sorted(numbered))
    return (f"numbered checkpoints to fall back to (copy one over checkpoints-meta/checkpoint.pth to resume "
            f"from it): {names}")
