"""Evaluation of a training run's checkpoints: held-out denoising score-matching loss and samples.

``python main_fastmri.py --mode eval`` (Song et al. 2021; Chung & Ye 2022) runs :func:`evaluate`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from score_mri.training import datasets
from score_mri.training import losses
from score_mri.errors import UserError
from models.checkpoint import CheckpointError, load_checkpoint
from score_mri.training.state import Log, build, numbered_checkpoints, sample_to_dir, train_option
from score_mri.utils import get_data_scaler


def _select_checkpoints(config, workdir: Path) -> list[Path]:
    """Numbered checkpoints in [eval.begin_ckpt, eval.end_ckpt]; else the meta (latest) one; else the last numbered."""
    numbered = numbered_checkpoints(workdir)
    ev = config.get("eval", None)
    begin = ev.get("begin_ckpt", None) if ev is not None else None
    end = ev.get("end_ckpt", None) if ev is not None else None
    if begin is not None and end is not None:
        chosen = [numbered[k] for k in sorted(numbered) if begin <= k <= end]
        if chosen:
            return chosen
    meta = workdir / "checkpoints-meta" / "checkpoint.pth"
    if meta.exists():  # the latest state (written at every snapshot and at the end of training)
        return [meta]
    if numbered:
        return [numbered[max(numbered)]]
    raise UserError(f"no checkpoint found in {workdir}/checkpoints or {workdir}/checkpoints-meta")


def evaluate(config, workdir: str, eval_folder: str = "eval") -> list[dict]:
    """Held-out denoising score-matching loss (EMA weights) of saved checkpoints, plus optional samples.

    Writes ``<workdir>/<eval_folder>/eval_results.json`` and, when ``config.eval.enable_sampling``,
    ``<eval_folder>/<checkpoint>/sample.png``. The loss uses fixed draws (seed ``config.seed``), so
    checkpoints are compared on the same t and z.
    """
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise UserError(f"work directory {workdir} does not exist")
    if int(os.environ.get("RANK", 0)) != 0:  # launched by torchrun: evaluation runs on rank 0 only
        return []
    out_dir = workdir / eval_folder
    ckpts = _select_checkpoints(config, workdir)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    _, eval_ds = datasets.get_slice_datasets(config)
    model, ema, _, sde = build(config, device)
    log = Log(workdir, True)
    out_dir.mkdir(parents=True, exist_ok=True)
    loss_fn = losses.get_sde_loss_fn(sde, train=False, reduce_mean=train_option(config, "reduce_mean"),
                                     continuous=True, bf16=bool(train_option(config, "bf16")))
    scaler = get_data_scaler(config)
    ev = config.get("eval", None)
    enable_sample = bool(ev.get("enable_sampling", ev.get("enable_sample", False))) if ev is not None else False
    n_samples = int(ev.get("grid_samples", 16)) if ev is not None else 16
    results = []
    for path in ckpts:
        try:
            loaded = load_checkpoint(str(path), model, ema=ema, device=device)
        except CheckpointError as e:
            raise UserError(str(e)) from None
        ema.copy_to(model.parameters())
        res = {"checkpoint": str(path), "step": int(loaded.get("step", -1))}
        if len(eval_ds) > 0:
            g = torch.Generator().manual_seed(int(config.seed))
            total, count = 0.0, 0
            with torch.no_grad():
                for batch in eval_ds.batches(int(config.training.batch_size)):
                    b = batch.shape[0]
                    total += loss_fn(model, scaler(batch.to(device)), g).item() * b
                    count += b
            res.update(eval_loss=total / count, n_slices=count)
            log(f"{path.name} (step {res['step']}): held-out loss {res['eval_loss']:.5e} over {count} slices")
        else:
            log(f"{path.name}: no held-out slices (config.data.eval_every=0); loss skipped")
        if enable_sample:
            # the EMA weights are already in the model (ema=None: no swap)
            res["samples"] = sample_to_dir(config, model, None, sde, out_dir / path.stem, n=n_samples, log=log)
        results.append(res)
    with open(out_dir / "eval_results.json", "w") as f:
        json.dump(results, f, indent=2)
    return results
