"""What training and evaluation share: the training defaults, the rank-0 log, the model / EMA / optimizer / SDE
of a config, the numbered checkpoints of a run and unconditional samples written to a folder."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from models import utils as mutils
from models.ema import ExponentialMovingAverage
from score_mri import sde as sde_lib
from score_mri.training import losses

__all__ = ["TRAIN_DEFAULTS", "train_option", "Log", "build", "numbered_checkpoints", "sample_to_dir"]

TRAIN_DEFAULTS = {
    "n_iters": 0,                 # optimisation steps; 0: config.training.epochs passes over the slices
    "snapshot_freq": 50000,       # numbered checkpoint checkpoints/checkpoint_<step // snapshot_freq>.pth
    "snapshot_freq_for_preemption": 5000,  # checkpoints-meta/checkpoint.pth every this many steps ...
    "snapshot_minutes": 3.0,      # ... or every this many minutes of wall time, whichever comes first
    "snapshot_sampling": False,   # draw samples (EMA weights) at every numbered checkpoint
    "log_freq": 25,
    "eval_freq": 0,               # held-out loss of one batch every this many steps (0: never)
    "bf16": False,                # bf16 autocast of the model forward (CPU or CUDA)
    "init_from": "",              # a fresh run starts from these weights (model + ema), e.g. a shipped prior
    "continuous": True,
    "reduce_mean": False,
    "likelihood_weighting": False,
    "sde": "vesde",
}


def train_option(config, name: str):
    """``config.training.<name>``, or its default from ``TRAIN_DEFAULTS`` when absent."""
    return config.training.get(name, TRAIN_DEFAULTS[name])


class Log:
    """Rank-0 logger: stdout (through tqdm) and ``<workdir>/stdout.txt``."""

    def __init__(self, workdir: Path, enabled: bool):
        self.enabled = enabled
        self.path = workdir / "stdout.txt"

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm
        tqdm.write(msg)
        with open(self.path, "a") as f:
            f.write(msg + "\n")


CONFIG_RECORD = "config.json"  # the resolved config of a run's latest start, in its workdir


def flat_config(config) -> dict[str, object]:
    """The config as {'group.key': value} with JSON-ready values (tuples as lists, anything else as str)."""
    def plain(v: object) -> object:
        if isinstance(v, (list, tuple)):
            return [plain(u) for u in v]
        return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)

    out: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if hasattr(value, "items"):
                walk(value, name + ".")
            else:
                out[name] = plain(value)

    walk(config, "")
    return out


def config_changes(old: dict[str, object], new: dict[str, object]) -> list[str]:
    """'key: old -> new' for every setting added, removed or changed between two :func:`flat_config` records."""
    missing = object()

    def show(record: dict[str, object], key: str) -> str:
        return repr(record[key]) if key in record else "(unset)"

    return [f"{k}: {show(old, k)} -> {show(new, k)}"
            for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]


def record_config(config, workdir: Path, resuming: bool, log) -> None:
    """Write ``<workdir>/config.json``; on a resume, first log how the config differs from the previous start."""
    import json

    from score_mri.io.atomic import atomic_write
    path = workdir / CONFIG_RECORD
    current = flat_config(config)
    if resuming and path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = None
        changes = config_changes(previous, current) if isinstance(previous, dict) else []
        for line in changes:
            log(f"config differs from the previous start: {line}")
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n"))


def build(config, device: torch.device):
    """Model (initialised from ``config.seed`` without touching global RNG), EMA, optimizer, SDE."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))
        model = mutils.create_model(config, device=torch.device("cpu"))
    model = model.to(device)
    ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    optimizer = losses.get_optimizer(config, model.parameters())
    sde = sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                        N=config.model.num_scales)
    return model, ema, optimizer, sde


def numbered_checkpoints(workdir: Path) -> dict[int, Path]:
    """``<workdir>/checkpoints/checkpoint_<n>.pth`` by n."""
    numbered = {}
    for p in (workdir / "checkpoints").glob("checkpoint_*.pth"):
        try:
            numbered[int(p.stem.split("_")[-1])] = p
        except ValueError:
            continue
    return numbered


def _save_grid(x: np.ndarray, path: Path) -> None:
    """Save [N, 1, H, W] images in [0, 1] as one PNG grid."""
    from PIL import Image
    n, _, H, W = x.shape
    ncol = int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    pad = 2
    grid = np.ones((nrow * (H + pad) + pad, ncol * (W + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        grid[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = x[i, 0]
    Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8)).save(path)


def sample_to_dir(config, model, ema, sde, out_dir: Path, n: int, log, seed: int | None = None) -> bool:
    """Unconditional PC samples (Algorithm 1) -> ``out_dir/sample.{npy,png}`` (EMA weights swapped in if given)."""
    from score_mri import samplers as sampling

    shape = (n, config.data.num_channels, config.data.image_size, config.data.image_size)
    inverse_scaler = (lambda x: (x + 1.0) / 2.0) if config.data.centered else (lambda x: x)
    generator = torch.Generator().manual_seed(int(config.seed) if seed is None else seed)
    sampler = sampling.get_sampling_fn(config, sde, shape, inverse_scaler, 1e-3, generator=generator)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    try:
        with torch.no_grad():
            out = sampler(model)
    finally:
        if ema is not None:
            ema.restore(model.parameters())
    x = out[0].detach().float().cpu().numpy()  # (samples, network evaluations)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "sample.npy", x)
    _save_grid(np.clip(x, 0, 1), out_dir / "sample.png")
    log(f"samples written to {out_dir}")
    return True
