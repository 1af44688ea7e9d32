"""NCSN++ forward speed: wall time and achieved FLOP/s as a fraction of a same-run 2048^2 float32 GEMM.

Cases (random weights; speed does not depend on them):
  embedded_320  the embedded prior (configs/ve/colin27_ncsnpp_small.py) at 320x320, batch 1
  coils_192     the same model on one batched multi-coil call: 8 coils x (real, imag) = 16 images at 192x192
  knee_80       the full knee model (61 M parameters) at 80x80, batch 1 (``--knee``; compare
                ``shared/reference/cpu_benchmarks.json``, where the original reached 0.885 of GEMM)

Settings, each adding one step to the previous row (each run in its own process, because the glibc
allocator setting cannot be undone):
  baseline        torch.no_grad, glibc malloc defaults, NCHW, reference upfirdn2d (zero insertion + pad)
  inference_mode  + torch.inference_mode (perf.inference)
  allocator       + perf.configure_cpu_allocator() (M_MMAP_MAX=0, large trim threshold)
  fir_conv        + upfirdn2d as one strided (transposed) depthwise convolution (op.upfirdn2d.FAST_PATH)
  channels_last   + perf.prepare_model_for_inference(..., channels_last=True) and NHWC inputs
  compile         + torch.compile (only with ``--compile``; slow to compile on a small CPU)
On a GPU (``torch.cuda.is_available()``) the cases also run on CUDA with the native FIR paths and with the
``op/`` CUDA kernel (``cuda_native_ref``, ``cuda_native_conv``, ``cuda_op``).

  python benchmarks/forward_speed.py                       # default cases, 3 timed calls per setting
  python benchmarks/forward_speed.py --quick               # tiny sizes: checks the script, numbers meaningless
  python benchmarks/forward_speed.py --profile embedded_320 # op-level profile of the fastest setting

Writes benchmarks/results/forward_speed.json and .md (``--out`` to change the folder).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score_mri.cli import flags as cli  # noqa: E402
from benchmarks import common  # noqa: E402

CASES = {
    "embedded_320": {"config": "configs/ve/colin27_ncsnpp_small.py", "batch": 1, "size": 320},
    "coils_192": {"config": "configs/ve/colin27_ncsnpp_small.py", "batch": 16, "size": 192},
    "knee_80": {"config": "configs/ve/fastmri_knee_320_ncsnpp_continuous.py", "batch": 1, "size": 80},
}
QUICK = {"embedded_320": {"batch": 1, "size": 64}, "coils_192": {"batch": 4, "size": 32},
         "knee_80": {"batch": 1, "size": 16}}
CPU_SETTINGS = ["baseline", "inference_mode", "allocator", "fir_conv", "channels_last"]
STEPS = {  # which switches each cumulative setting turns on
    "baseline": set(),
    "inference_mode": {"inference_mode"},
    "allocator": {"inference_mode", "allocator"},
    "fir_conv": {"inference_mode", "allocator", "fir_conv"},
    "channels_last": {"inference_mode", "allocator", "fir_conv", "channels_last"},
    "compile": {"inference_mode", "allocator", "fir_conv", "channels_last", "compile"},
    "cuda_native_ref": {"inference_mode", "no_cuda_op"},
    "cuda_native_conv": {"inference_mode", "fir_conv", "no_cuda_op"},
    "cuda_op": {"inference_mode"},
}
SIGMA = 10.0  # noise level of the timed calls (any value: the cost does not depend on it)


def load_config(path: str):
    """``get_config()`` of a config file given relative to the repository."""
    return cli.load_config(common.REPO / path)


# ----------------------------------------------------------------------------------------------------------
# Worker: one case under one setting, in a fresh process
# ----------------------------------------------------------------------------------------------------------

def worker(spec: dict) -> dict:
    """Build the model with the setting's switches, count FLOPs if asked, time ``repeats`` forwards."""
    from score_mri import perf

    on = STEPS[spec["setting"]]
    if "allocator" in on:
        perf.configure_cpu_allocator()  # before the model and its activations are allocated
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    import models  # noqa: F401 - registers NCSN++
    from models import utils as mutils
    upfirdn = importlib.import_module("op.upfirdn2d")
    upfirdn.FAST_PATH = "fir_conv" in on
    if "no_cuda_op" in on:
        upfirdn._load_cuda = lambda: None  # force the native path on CUDA tensors

    device = torch.device(spec["device"])
    config = load_config(spec["config"])
    torch.manual_seed(0)  # same random weights in every worker (this process only runs the benchmark)
    model = mutils.create_model(config, device=device)
    model = perf.prepare_model_for_inference(model, device, channels_last="channels_last" in on)
    g = torch.Generator().manual_seed(1)
    B, S = spec["batch"], spec["size"]
    x = torch.rand(B, 1, S, S, generator=g).to(device)  # [B, 1, H, W]
    if "channels_last" in on:
        x = x.contiguous(memory_format=torch.channels_last)
    sigma = torch.full((B,), SIGMA, device=device)
    net = model
    grad_ctx = perf.inference if "inference_mode" in on else torch.no_grad

    out: dict = {"spec": spec, "switches": sorted(on), "allocator": perf.allocator_state(),
                 "info": common.machine_info(device)}
    with grad_ctx():
        if spec.get("count_flops"):
            out["flops"], out["flops_by_op"] = common.count_flops(lambda: model(x, sigma))
        flops = out.get("flops", spec.get("flops"))
        if "compile" in on:
            net = torch.compile(model)
            t0 = time.perf_counter()
            net(x, sigma)
            out["compile_s"] = time.perf_counter() - t0
        y = net(x, sigma)  # warm-up (oneDNN primitive cache, allocator pools)
        common.synchronize(device)
        out["output_stats"] = {"mean": float(y.double().mean()), "abs_mean": float(y.double().abs().mean())}
        runs = []
        for _ in range(spec["repeats"]):
            runs.append(common.timed_call(lambda: net(x, sigma), device, flops=flops))
        if spec.get("profile"):
            out["profile"] = profile_forward(lambda: net(x, sigma))
    out["runs"] = runs
    if device.type == "cuda":
        out["cuda_op_loaded"] = upfirdn._cuda_module is not None and "no_cuda_op" not in on
    out["summary"] = common.summarize(runs)
    return out


def _category(name: str, shapes) -> str:
    """Group profiler ops: convolutions by kernel shape, normalisation, activation, elementwise, copies."""
    if "conv" in name:
        w = shapes[1] if shapes and len(shapes) > 1 and shapes[1] else None
        x_shape = shapes[0] if shapes and shapes[0] else None
        if w and len(w) == 4:
            if w[1] == 1 and x_shape and len(x_shape) == 4 and x_shape[1] == w[0] > 1:
                return "conv depthwise FIR"
            return f"conv {w[2]}x{w[3]}"
        return "conv (other)"
    if "group_norm" in name:
        return "group_norm"
    if "silu" in name:
        return "silu"
    if any(k in name for k in ("::add", "::div", "::mul", "::sub")):
        return "add/div/mul"
    if any(k in name for k in ("copy_", "::cat", "fill_", "pad", "::clone", "contiguous")):
        return "copy/cat/fill/pad"
    if any(k in name for k in ("bmm", "softmax", "::mm", "addmm")):
        return "attention/dense"
    return "other"


def profile_forward(fn) -> dict:
    """Self time of the leaf ops of one forward grouped by category, and per conv shape GFLOP/s."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_flops=True) as prof:
        fn()
    cats: dict[str, float] = {}
    convs = []
    total = 0.0
    for ev in prof.key_averages(group_by_input_shape=True):
        self_us = ev.self_cpu_time_total
        if self_us <= 0:
            continue
        total += self_us
        cat = _category(ev.key, ev.input_shapes)
        cats[cat] = cats.get(cat, 0.0) + self_us
        if ev.flops and "conv" in ev.key:
            convs.append({"op": ev.key, "shapes": str(ev.input_shapes[:2]), "calls": ev.count,
                          "ms": ev.cpu_time_total / 1e3, "gflops": ev.flops / (ev.cpu_time_total / 1e6) / 1e9
                          if ev.cpu_time_total > 0 else None})
    convs.sort(key=lambda r: -r["ms"])
    return {"total_self_ms": total / 1e3,
            "share_by_category": {k: v / total for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
            "top_convs": convs[:12]}


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------

COLUMNS = [("case", "case"), ("setting", "setting"), ("device", "device"), ("median_time_s", "median s"),
           ("min_time_s", "min s"), ("median_achieved_gflops", "GFLOP/s"), ("median_gemm_gflops", "GEMM GFLOP/s"),
           ("median_fraction_of_gemm", "frac GEMM (wall)"), ("median_fraction_of_gemm_cpu", "frac GEMM (CPU s)"),
           ("speedup_vs_baseline", "speed-up"), ("output_rel_diff_vs_baseline", "out diff"), ("median_sys_s", "sys s"),
           ("max_other_procs_cpu_s", "other procs CPU s"), ("median_loadavg_1m", "load 1m")]


def main(argv: list[str] | None = None) -> dict:
    """Run every (case, setting) in a worker process, print a markdown table, write JSON + markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="embedded_320,coils_192", help="comma list of " + ", ".join(CASES))
    p.add_argument("--knee", action="store_true", help="also run knee_80 (the full 61 M parameter model)")
    p.add_argument("--settings", default=",".join(CPU_SETTINGS), help="comma list of CPU settings")
    p.add_argument("--compile", action="store_true", help="add the torch.compile setting")
    p.add_argument("--repeats", type=int, default=3, help="timed forwards per (case, setting) and round")
    p.add_argument("--rounds", type=int, default=1, help="run the whole list this many times, interleaved "
                                                         "(pools the runs; evens out drifting load)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the script; numbers meaningless)")
    p.add_argument("--profile", default="", help="comma list of cases to profile (fastest CPU setting)")
    p.add_argument("--no_gpu", action="store_true", help="skip the CUDA rows even when a GPU is present")
    p.add_argument("--out", default=str(common.RESULTS), help="output folder")
    p.add_argument("--tag", default="", help="suffix of the output file names (e.g. 1thread)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker)), default=str))
        return {}

    cases = [c for c in args.cases.split(",") if c] + (["knee_80"] if args.knee and "knee_80" not in args.cases else [])
    settings = [s for s in args.settings.split(",") if s] + (["compile"] if args.compile else [])
    for name in cases:
        if name not in CASES:
            p.error(f"unknown case {name!r}; expected one of {', '.join(CASES)}")
    for name in settings:
        if name not in STEPS or name.startswith("cuda"):
            p.error(f"unknown setting {name!r}; expected one of {', '.join(CPU_SETTINGS + ['compile'])}")
    profile_cases = {c for c in args.profile.split(",") if c}
    jobs = [(c, s, "cpu") for c in cases for s in settings]
    if torch.cuda.is_available() and not args.no_gpu:
        jobs += [(c, s, "cuda") for c in cases for s in ("cuda_native_ref", "cuda_native_conv", "cuda_op")]
        gpu_note = f"GPU: {torch.cuda.get_device_name(0)}"
    else:
        gpu_note = "no GPU (torch.cuda.is_available() is False): CUDA rows and the op/ CUDA speed-up skipped"
    print(gpu_note, flush=True)

    flops: dict[str, int] = {}
    results: list[dict] = []
    for round_i, (case, setting, device) in [(r, j) for r in range(max(args.rounds, 1)) for j in jobs]:
        spec = dict(CASES[case], **(QUICK[case] if args.quick else {}))
        spec.update(case=case, setting=setting, device=device, repeats=args.repeats, threads=args.threads,
                    count_flops=case not in flops, flops=flops.get(case),
                    profile=(case in profile_cases and setting == settings[-1] and device == "cpu"
                             and round_i == 0))
        if device == "cuda":
            spec["repeats"] = max(args.repeats, 10)
        res = common.run_worker(Path(__file__), spec)
        if "flops" in res:
            flops[case] = res["flops"]
        res["flops"] = flops.get(case)
        same = next((r for r in results if r["spec"]["case"] == case and r["spec"]["setting"] == setting
                     and r["spec"]["device"] == device), None)
        if same is None:
            results.append(res)
        else:  # a later round: pool the runs
            same["runs"] += res["runs"]
            same["summary"] = common.summarize(same["runs"])
        s = res["summary"]
        print(f"{case:>13} {setting:>16} {device:>4}: median {s['median_time_s']:.3f} s, "
              f"frac GEMM {common.fmt(s['median_fraction_of_gemm'])} (wall) "
              f"{common.fmt(s['median_fraction_of_gemm_cpu'])} (CPU s), load {s['median_loadavg_1m']}, "
              f"other procs {s['max_other_procs_cpu_s']:.1f} CPU s", flush=True)

    rows = []
    for res in results:
        spec = res["spec"]
        base = next((r for r in results if r["spec"]["case"] == spec["case"] and r["spec"]["device"] == spec["device"]
                     and r["spec"]["setting"] in ("baseline", "cuda_native_ref")), None)
        row = dict(res["summary"], case=spec["case"], setting=spec["setting"], device=spec["device"])
        if base is not None:
            row["speedup_vs_baseline"] = base["summary"]["median_time_s"] / res["summary"]["median_time_s"]
            b, o = base["output_stats"]["abs_mean"], res["output_stats"]["abs_mean"]
            row["output_rel_diff_vs_baseline"] = abs(o - b) / max(abs(b), 1e-30)
        rows.append(row)
    cuda_speedups = {}
    for case in cases:
        by = {r["setting"]: r for r in rows if r["case"] == case and r["device"] == "cuda"}
        if "cuda_op" in by and "cuda_native_conv" in by:
            cuda_speedups[case] = {
                "op_cuda_vs_native_ref": by["cuda_native_ref"]["median_time_s"] / by["cuda_op"]["median_time_s"],
                "op_cuda_vs_native_conv": by["cuda_native_conv"]["median_time_s"] / by["cuda_op"]["median_time_s"]}

    info = results[0]["info"] if results else {}
    md = [f"# NCSN++ forward speed{' (QUICK: tiny sizes, numbers meaningless)' if args.quick else ''}", "",
          f"Machine: {info.get('cpu_model')}, {info.get('cpu_count')} CPUs, torch {info.get('torch')}, "
          f"{info.get('torch_threads')} threads. {gpu_note}.", "",
          f"FLOPs per call (FlopCounterMode, conv/mm/bmm only): "
          + ", ".join(f"{c} {flops[c] / 1e9:.1f} GFLOP" for c in cases if c in flops) + ".", "",
          "Fractions: achieved FLOP/s over the mean of a 2048^2 float32 GEMM measured right before and after "
          "each call (wall clock), and the same per CPU-second of this process (steadier on a shared machine). "
          "`other procs CPU s` is the CPU time other processes used during the slowest-loaded call: numbers "
          "are reliable only when it is near 0.", "",
          common.markdown_table(rows, COLUMNS)]
    if cuda_speedups:
        md += ["", "op/ CUDA upfirdn2d speed-up (whole forward): " + "; ".join(
            f"{c}: {v['op_cuda_vs_native_ref']:.2f}x vs reference native, {v['op_cuda_vs_native_conv']:.2f}x vs "
            f"conv native" for c, v in cuda_speedups.items())]
    for res in results:
        if "profile" in res:
            prof = res["profile"]
            md += ["", f"## Profile: {res['spec']['case']} ({res['spec']['setting']})", "",
                   "Share of op self time: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["share_by_category"].items()),
                   "", common.markdown_table(prof["top_convs"], [("shapes", "input, weight"), ("calls", "calls"),
                                                                  ("ms", "ms (incl.)"), ("gflops", "GFLOP/s")])]
    text = "\n".join(md)
    print(text)
    data = {"quick": args.quick, "cases": {c: dict(CASES[c], **(QUICK[c] if args.quick else {})) for c in cases},
            "flops": flops, "rows": rows, "cuda_op_speedup": cuda_speedups, "gpu": gpu_note, "workers": results}
    name = "forward_speed" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    jpath, mpath = common.write_results(name, data, text, args.out)
    print(f"wrote {jpath} and {mpath}")
    return data


if __name__ == "__main__":
    main()
