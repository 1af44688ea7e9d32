"""Export a training snapshot as the embedded prior: ``weights/<name>.pth`` plus a JSON/markdown card.

    python scripts/export_prior.py --workdir runs/colin27 --config configs/ve/colin27_ncsnpp_small.py \
        --name colin27_ncsnpp_small --wall_hours 1.6 --command "..."

The weights file keeps the released checkpoint layout (README "Using the original checkpoint") (``model``, ``ema``, ``step``; the optimizer
state is dropped to keep the file small). The card records data, config, steps, wall time, the command
to reproduce and the loss curve (``weights/<name>_loss.png``), read from ``<workdir>/stdout.txt``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.checkpoint import save_checkpoint  # noqa: E402

_LOG = re.compile(r"step: (\d+), training_loss: ([0-9.eE+-]+)")


def read_loss_curve(stdout_txt: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs logged by run_lib.train."""
    pairs = [(int(m[1]), float(m[2])) for m in _LOG.finditer(stdout_txt.read_text())]
    last: dict[int, float] = {}
    for s, v in pairs:  # a resumed run may log a step twice: keep the latest
        last[s] = v
    return sorted(last.items())


def plot_loss(curve: list[tuple[int, float]], path: Path, pixels: int) -> None:
    """Loss (per pixel, log scale) against step, with a running median."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    steps = np.array([s for s, _ in curve])
    loss = np.array([v for _, v in curve]) / pixels
    k = max(1, len(loss) // 20)
    med = np.array([np.median(loss[max(0, i - k):i + k + 1]) for i in range(len(loss))])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.semilogy(steps, loss, ".", ms=2, alpha=0.5, label="logged batch loss")
    ax.semilogy(steps, med, "-", lw=1.5, label="running median")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("DSM loss per pixel")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Write weights/<name>.pth, <name>.json, <name>.md and <name>_loss.png."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--config", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--wall_hours", type=float, required=True, help="training wall time, for the card")
    p.add_argument("--command", required=True, help="command that reproduces the run, for the card")
    p.add_argument("--notes", default="")
    a = p.parse_args()

    ckpt = torch.load(a.workdir / "checkpoints-meta" / "checkpoint.pth", map_location="cpu", weights_only=True)
    out_dir = REPO / "weights"
    out_dir.mkdir(exist_ok=True)
    weights = out_dir / f"{a.name}.pth"
    save_checkpoint(weights, {"model": ckpt["model"], "ema": ckpt["ema"], "step": int(ckpt["step"])})

    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", REPO / a.config)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config()
    pixels = config.data.image_size ** 2
    curve = read_loss_curve(a.workdir / "stdout.txt")
    plot_loss(curve, out_dir / f"{a.name}_loss.png", pixels)
    tail = [v for _, v in curve[-20:]]
    card = {
        "name": a.name,
        "config": a.config,
        "weights": f"weights/{a.name}.pth",
        "size_MB": round(weights.stat().st_size / 2 ** 20, 1),
        "parameters": sum(v.numel() for k, v in ckpt["model"].items() if k != "sigmas"),
        "steps": int(ckpt["step"]),
        "batch_size": int(config.training.batch_size),
        "crop": int(config.data.image_size),
        "wall_hours": a.wall_hours,
        "data": list(config.data.nifti_files),
        "data_licence": "Colin27 (ch2, ch2bet) from Debian mricron-data, BSD-3-Clause",
        "final_loss_per_pixel_median_last20": (sorted(tail)[len(tail) // 2] / pixels) if tail else None,
        "loss_curve": [[s, v] for s, v in curve],
        "command": a.command,
        "notes": a.notes,
    }
    (out_dir / f"{a.name}.json").write_text(json.dumps(card, indent=1))
    md = [f"# Embedded prior `{a.name}`", "",
          "| field | value |", "|---|---|"]
    for k in ("config", "weights", "size_MB", "parameters", "steps", "batch_size", "crop", "wall_hours",
              "data", "data_licence", "final_loss_per_pixel_median_last20"):
        md.append(f"| {k} | {card[k]} |")
    md += ["", "Reproduce:", "", "```bash", a.command, "```", "",
           f"![loss curve]({a.name}_loss.png)", ""]
    if a.notes:
        md += [a.notes, ""]
    (out_dir / f"{a.name}.md").write_text("\n".join(md))
    print(f"wrote {weights} ({card['size_MB']} MB, step {card['steps']}) and its card")


if __name__ == "__main__":
    main()
