"""FIR upsampling under bf16 autocast on the CPU: float32 transposed convolution against the bf16 one.

NCSN++ upsamples with a fixed [1, 3, 3, 1] FIR filter, run as one depthwise ``conv_transpose2d``
(``op/upfirdn2d.py``). Under CPU bf16 autocast that call used to run in bf16, where oneDNN's depthwise
transposed convolution is far slower than in float32; ``op.upfirdn2d._transposed_depthwise`` now keeps it in
float32. This script measures both, interleaved in one run:

  * the layer alone at the embedded model's three upsampling shapes (64 channels, 40 -> 80, 80 -> 160,
    160 -> 320, channels-last), fp32 call vs bf16 call;
  * one forward of the embedded prior at 320x320 in the default precision (bf16 body, float32 ends) with the
    FIR upsampling in float32 (now) and in bf16 (before), and the largest output difference between them.

    python benchmarks/fir_upsample_speed.py                 # 2 threads, 7 repeats
    python benchmarks/fir_upsample_speed.py --threads 1 --repeats 3

Writes benchmarks/results/fir_upsample_speed.json and .md (``--out`` to change the folder).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

UPSAMPLE_SHAPES = ((1, 64, 40, 40), (1, 64, 80, 80), (1, 64, 160, 160))
CONFIG = "configs/ve/colin27_ncsnpp_small.py"
WEIGHTS = "weights/colin27_ncsnpp_small.pth"


def bf16_transposed(x: torch.Tensor, weight: torch.Tensor, stride, padding, output_padding) -> torch.Tensor:
    """The previous behaviour: the depthwise transposed convolution as autocast runs it (bf16)."""
    return F.conv_transpose2d(x, weight, stride=stride, padding=padding, output_padding=output_padding,
                              groups=x.shape[1])


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call, in milliseconds."""
    fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def layer_rows(repeats: int) -> list[dict]:
    """The FIR upsampling layer alone: float32 path vs bf16 path, under bf16 autocast."""
    from models.up_or_down_sampling import upsample_2d
    upfirdn = importlib.import_module("op.upfirdn2d")
    fixed = upfirdn._transposed_depthwise
    rows = []
    g = torch.Generator().manual_seed(0)
    for shape in UPSAMPLE_SHAPES:
        x = torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)
        res = {}
        for name, impl in (("fp32", fixed), ("bf16", bf16_transposed)):
            upfirdn._transposed_depthwise = impl

            def call() -> torch.Tensor:
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    return upsample_2d(x, (1, 3, 3, 1), factor=2)

            res[name] = median_ms(call, repeats)
        upfirdn._transposed_depthwise = fixed
        rows.append({"case": "FIR upsample x2", "shape": "x".join(map(str, shape)), "fp32_ms": round(res["fp32"], 2),
                     "bf16_ms": round(res["bf16"], 2), "speedup": round(res["bf16"] / res["fp32"], 2)})
    return rows


def forward_row(repeats: int) -> dict:
    """One embedded-prior forward at 320x320 in the default bf16 precision: FIR in float32 vs in bf16."""
    from score_mri import perf, recon
    from score_mri.cli.flags import load_config
    upfirdn = importlib.import_module("op.upfirdn2d")
    fixed = upfirdn._transposed_depthwise
    config = load_config(common.REPO / CONFIG)
    model = perf.prepare_model_for_inference(recon.load_model(config, common.REPO / WEIGHTS, "cpu"), "cpu",
                                             precision="bf16")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 320, 320, generator=g)
    t = torch.full((1,), 0.5)

    def call() -> torch.Tensor:
        with perf.inference(), perf.model_autocast(model, x):
            return model(x, t)

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    outputs = {}
    for _ in range(repeats):  # interleaved, so drifts of the host's speed hit both alike
        for name, impl in (("fp32", fixed), ("bf16", bf16_transposed)):
            upfirdn._transposed_depthwise = impl
            outputs[name] = call().float()
            tic = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - tic)
    upfirdn._transposed_depthwise = fixed
    fp32_ms, bf16_ms = (1000 * statistics.median(times[k]) for k in ("fp32", "bf16"))
    diff = float((outputs["fp32"] - outputs["bf16"]).abs().max() / outputs["fp32"].abs().max())
    return {"case": "embedded prior forward (bf16 body)", "shape": "1x1x320x320", "fp32_ms": round(fp32_ms, 1),
            "bf16_ms": round(bf16_ms, 1), "speedup": round(bf16_ms / fp32_ms, 2), "max_rel_diff": f"{diff:.1e}"}


def main(argv: list[str] | None = None) -> dict:
    """Run both measurements and write the table and JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = layer_rows(args.repeats) + [forward_row(args.repeats)]
    data = {"threads": args.threads, "repeats": args.repeats, "load": common.loadavg(),
            "machine": common.machine_info(torch.device("cpu")), "rows": rows}
    md = ("# FIR upsampling under CPU bf16 autocast\n\n"
          f"{args.threads} thread(s), median of {args.repeats}, load {common.loadavg()}. `fp32 ms`: the depthwise "
          "transposed convolution in float32 (now); `bf16 ms`: in bf16 (before); `speed-up` = bf16 / fp32.\n\n"
          + common.markdown_table(rows, [("case", "case"), ("shape", "input"), ("fp32_ms", "fp32 ms"),
                                         ("bf16_ms", "bf16 ms"), ("speedup", "speed-up"),
                                         ("max_rel_diff", "max rel. output diff")]) + "\n")
    common.write_results("fir_upsample_speed", data, md, args.out)
    print(md)
    return data


if __name__ == "__main__":
    main()
