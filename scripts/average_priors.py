"""Average the weights of two priors of the same architecture ("model soup", Wortsman et al., ICML 2022).

    python scripts/average_priors.py weights/colin27_ncsnpp_small.pth \
        runs/open_mri/checkpoints-meta/checkpoint.pth --weight 0.5 --out runs/soup/soup50.pth

Each input is a weights file or a training snapshot (its EMA weights are used when it has them). The result,
(1 - w) * A + w * B for every floating-point tensor (buffers such as the sigmas must agree), is written in the
released checkpoint layout (``model``, ``ema``, ``step`` 0), so ``--ckpt`` and ``benchmarks/prior_quality.py``
take it. Averaging only makes sense for priors fine-tuned from one another (same basin); the result is judged by
``benchmarks/prior_quality.py`` like any other checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models import utils as mutils  # noqa: E402
from models.checkpoint import CheckpointError, load_model_weights, save_checkpoint  # noqa: E402
from models.ema import ExponentialMovingAverage  # noqa: E402
from score_mri.cli.flags import load_config  # noqa: E402


def load_weights(config, path: Path) -> torch.nn.Module:
    """The model of ``config`` with the EMA weights of ``path`` (the stored weights when it has no EMA)."""
    model = mutils.create_model(config)
    load_model_weights(path, model, device="cpu")
    return model


def average_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], w: float) -> dict[str, torch.Tensor]:
    """(1 - w) a + w b for floating-point tensors; other tensors must be equal and are kept."""
    if a.keys() != b.keys():
        raise ValueError(f"the priors differ in their keys: {sorted(set(a) ^ set(b))[:5]}")
    out = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shapes {tuple(ta.shape)} and {tuple(tb.shape)} differ")
        if ta.is_floating_point():
            out[key] = ta * (1.0 - w) + tb * w
        elif torch.equal(ta, tb):
            out[key] = ta
        else:
            raise ValueError(f"{key}: integer tensors differ")
    return out


def main(argv: list[str] | None = None) -> Path:
    """Average two priors and write the result."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="first prior (weights file or training snapshot)")
    p.add_argument("b", type=Path, help="second prior")
    p.add_argument("--weight", type=float, default=0.5, help="weight w of the second prior (0..1)")
    p.add_argument("--config", type=Path, default=REPO / "configs/ve/colin27_ncsnpp_small.py",
                   help="config of both priors' network")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not 0.0 <= args.weight <= 1.0:
        p.error(f"--weight must be in [0, 1], got {args.weight}")
    for path in (args.a, args.b):
        if not path.is_file():
            p.error(f"{path} not found")
    config = load_config(args.config)
    try:
        model = load_weights(config, args.a)
        model.load_state_dict(average_state(model.state_dict(), load_weights(config, args.b).state_dict(),
                                            args.weight))
    except (CheckpointError, ValueError) as e:  # another architecture, a damaged file: one line, exit 2
        p.exit(2, f"average_priors.py: error: {str(e).splitlines()[0]}\n")
    ema = ExponentialMovingAverage(model.parameters(), decay=float(config.model.ema_rate))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, {"model": model, "ema": ema, "step": 0})
    print(f"wrote {args.out}: {1 - args.weight:g} x {args.a} + {args.weight:g} x {args.b}")
    return args.out


if __name__ == "__main__":
    main()
