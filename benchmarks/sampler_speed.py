"""Reconstruction speed of Algorithms 2-5 with the embedded prior: seconds and network calls per
reconstruction, and batched coils vs the per-coil loop (Algorithms 4 and 5) at equal results.

Random weights by default (speed does not depend on them; ``--ckpt`` loads real ones). Inputs are the
bundled samples: ``real/retrospective/001`` (320x320, Algorithm 2), ``single-coil/001`` (320x320 complex,
Algorithm 3), ``multi-coil/001`` (8 coils, 192x192, Algorithms 4 and 5; for Algorithm 5 the coil maps are
the coil images over their root-sum-of-squares, which costs nothing to compute and times the same as
ESPIRiT maps). Gaussian 1-D mask, x4, centre fraction 0.08, seed 0; fixed (non-faithful) mode as the scripts.
The speed settings of ``perf`` are on unless ``--plain``.

  python benchmarks/sampler_speed.py --N 3            # a few iterations of each algorithm
  python benchmarks/sampler_speed.py --quick          # 64x64 crops, N=2: checks the script only

Writes benchmarks/results/sampler_speed.json and .md (``--out`` to change the folder).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score_mri.cli import flags as cli  # noqa: E402
from fastmri_utils import center_crop  # noqa: E402
from benchmarks import common  # noqa: E402

CONFIG = "configs/ve/colin27_ncsnpp_small.py"
SAMPLES = {2: "samples/real/retrospective/001.npy", 3: "samples/single-coil/001.npy",
           4: "samples/multi-coil/001.npy", 5: "samples/multi-coil/001.npy"}
NAMES = {2: "Alg 2 real (fast)", 3: "Alg 3 complex (RI)", 4: "Alg 4 multi-coil SSOS", 5: "Alg 5 hybrid (SENSE)"}
AGREE_RTOL = 1e-3  # batched vs per-coil: same noise, float32 rounding of differently batched convolutions


def load_config(path: str):
    """``get_config()`` of a config file given relative to the repository."""
    return cli.load_config(common.REPO / path)


class Problem:
    """Image, mask and measured k-space of one algorithm's input ([1, C, H, W] tensors)."""

    def __init__(self, alg: int, crop: int | None, device: torch.device):
        import utils

        a = np.load(common.REPO / SAMPLES[alg]) if crop is None else center_crop(np.load(common.REPO / SAMPLES[alg]), (crop, crop))
        a = a[None] if a.ndim == 2 else a                                     # [C, H, W]
        if alg == 2:
            a = np.abs(a).astype(np.float32)
        a = a / np.abs(a).max()
        self.image = torch.from_numpy(np.ascontiguousarray(a))[None].to(device)  # [1, C, H, W]
        H, W = self.image.shape[-2:]
        mask = utils.get_mask(torch.zeros(1, 1, H, W), W, 1, type="gaussian1d", acc_factor=4,
                              center_fraction=0.08, seed=0)
        self.mask = mask.expand(self.image.shape).contiguous().to(device)     # [1, C, H, W]
        fft, ifft = (utils.fft2, utils.ifft2) if alg in (2, 3) else (utils.fft2_m, utils.ifft2_m)
        self.Fy = fft(self.image.to(torch.complex64)) * self.mask            # [1, C, H, W] measured k-space
        self.x_zf = ifft(self.Fy)
        if alg == 2:
            self.x_zf = self.x_zf.real
        img = self.image.to(torch.complex64)
        rss = torch.sqrt(torch.sum(torch.abs(img) ** 2, dim=1, keepdim=True))
        self.sens = img / (rss + 1e-6 * rss.max())                            # [1, C, H, W] toy coil maps


def build_sampler(alg: int, config, sde, problem: Problem, N: int, seed: int, batch_coils: bool = True):
    """The algorithm's sampler as the scripts build it (fixed mode), as fn(model) -> x."""
    import sampling
    import utils

    g = torch.Generator(device=problem.image.device).manual_seed(seed)
    kw = dict(snr=float(config.sampling.snr), n_steps=1, probability_flow=False,
              continuous=bool(config.training.continuous), denoise=True, generator=g)
    P, C, inv = sampling.ReverseDiffusionPredictor, sampling.LangevinCorrector, utils.get_data_inverse_scaler(config)
    if alg == 2:
        fn = sampling.get_pc_fouriercs_fast(sde, P, C, inv, **kw)
        return lambda model: fn(model, problem.x_zf, problem.mask, problem.Fy)
    if alg == 3:
        fn = sampling.get_pc_fouriercs_RI(sde, P, C, inv, **kw)
        return lambda model: fn(model, problem.x_zf, problem.mask, Fy=problem.Fy)
    if alg == 4:
        fn = sampling.get_pc_fouriercs_RI_PI_SSOS(sde, P, C, inv, mask=problem.mask, batch_coils=batch_coils, **kw)
    else:
        fn = sampling.get_pc_fouriercs_RI_coil_SENSE(sde, P, C, inv,
                                                     lamb_schedule=utils.lambda_schedule_linear(1.0, 0.2),
                                                     sens=problem.sens, mask=problem.mask, m_steps=50,
                                                     batch_coils=batch_coils, **kw)
    return lambda model: fn(model, problem.x_zf, y=problem.Fy)


class CallCounter:
    """Counts network calls and the images that went through them (forward pre-hook)."""

    def __init__(self, model: torch.nn.Module):
        self.calls = self.images = 0
        self.sizes: dict[int, int] = {}
        self.handle = model.register_forward_pre_hook(self.hook)

    def hook(self, module, inputs) -> None:
        x = inputs[0]
        self.calls += 1
        self.images += int(x.shape[0])
        self.sizes[int(x.shape[-1])] = self.sizes.get(int(x.shape[-1]), 0) + int(x.shape[0])

    def reset(self) -> None:
        self.calls = self.images = 0
        self.sizes = {}


def main(argv: list[str] | None = None) -> dict:
    """Time one reconstruction per algorithm (and the per-coil loop for 4 and 5); write JSON + markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=3, help="sampler iterations per reconstruction")
    p.add_argument("--algs", default="2,3,4,5", help="comma list of algorithms")
    p.add_argument("--crop", type=int, default=None, help="central crop of the inputs (divisible by 8)")
    p.add_argument("--quick", action="store_true", help="64x64 crops, N=2 (checks the script only)")
    p.add_argument("--no_loop", action="store_true", help="skip the per-coil loop runs of Algorithms 4 and 5")
    p.add_argument("--plain", action="store_true", help="without the perf settings (allocator, channels_last, "
                                                         "inference_mode)")
    p.add_argument("--ckpt", default=None, help="load these weights instead of random ones")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(common.RESULTS), help="output folder")
    p.add_argument("--tag", default="", help="suffix of the output file names (e.g. 1thread)")
    args = p.parse_args(argv)
    if args.quick:
        args.crop, args.N = args.crop or 64, min(args.N, 2)
    algs = [int(a) for a in args.algs.split(",") if a]
    if any(a not in SAMPLES for a in algs):
        p.error(f"--algs takes numbers from {sorted(SAMPLES)}")

    from score_mri import perf
    if not args.plain:
        perf.configure_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    import models  # noqa: F401 - registers NCSN++
    from models import utils as mutils
    from sde_lib import VESDE

    device = torch.device("cpu")
    config = load_config(CONFIG)
    torch.manual_seed(0)  # random weights: reproducible in this benchmark process
    model = mutils.create_model(config, device=device)
    if args.ckpt:
        from models.checkpoint import load_model_weights
        load_model_weights(args.ckpt, model)
    model = perf.prepare_model_for_inference(model, device, channels_last=not args.plain)
    grad_ctx = torch.no_grad if args.plain else perf.inference
    sde = VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max, N=args.N)
    counter = CallCounter(model)

    flops_per_image: dict[int, int] = {}

    def flops_of(sizes: dict[int, int]) -> int:
        """FLOPs of the network calls recorded as {image side: images}."""
        total = 0
        for side, n in sizes.items():
            if side not in flops_per_image:
                x1 = torch.zeros(1, 1, side, side, device=device)
                with grad_ctx():
                    flops_per_image[side] = common.count_flops(lambda: model(x1, torch.ones(1, device=device)))[0]
            total += flops_per_image[side] * n
        return total

    rows, records = [], []
    for alg in algs:
        problem = Problem(alg, args.crop, device)
        variants = [True] + ([False] if alg in (4, 5) and not args.no_loop else [])
        outputs = {}
        for batch_coils in variants:
            sample = build_sampler(alg, config, sde, problem, args.N, args.seed, batch_coils)
            with grad_ctx():
                counter.reset()
                result = {}
                rec = common.timed_call(lambda: result.setdefault("x", sample(model)), device)
            calls, images, sizes = counter.calls, counter.images, dict(counter.sizes)
            flops = flops_of(sizes)
            rec.update(flops=flops, achieved_gflops=flops / rec["time_s"] / 1e9)
            gemm = (rec["gemm_gflops_before"] + rec["gemm_gflops_after"]) / 2
            rec["fraction_of_gemm"] = rec["achieved_gflops"] / gemm
            outputs[batch_coils] = result["x"]
            row = {"alg": alg, "name": NAMES[alg], "batch_coils": batch_coils if alg in (4, 5) else None,
                   "size": f"{tuple(problem.image.shape[1:])}", "N": args.N, "seconds": rec["time_s"],
                   "per_iter_s": rec["time_s"] / args.N, "cpu_s": rec["user_s"] + rec["sys_s"],
                   "network_calls": calls, "calls_per_iter": calls / args.N,
                   "images_per_call": images / max(calls, 1), "fraction_of_gemm": rec["fraction_of_gemm"],
                   "sys_s": rec["sys_s"], "other_procs_cpu_s": rec.get("other_procs_cpu_s"),
                   "load_1m": (rec.get("loadavg_before") or [None])[0]}
            rows.append(row)
            records.append(dict(row, record=rec))
            print(f"{NAMES[alg]:>22} batch_coils={batch_coils!s:5}: {rec['time_s']:.2f} s, {calls} calls "
                  f"({images / max(calls, 1):.0f} images each), frac GEMM {rec['fraction_of_gemm']:.2f}, "
                  f"load {row['load_1m']}, other procs {row['other_procs_cpu_s'] or 0:.1f} CPU s", flush=True)
        if len(outputs) == 2:
            a, b = outputs[True], outputs[False]
            rel = float((a - b).abs().max() / b.abs().max())
            agree = rel <= AGREE_RTOL
            batched = next(r for r in rows if r["alg"] == alg and r["batch_coils"] is True)
            loop = next(r for r in rows if r["alg"] == alg and r["batch_coils"] is False)
            batched["loop_over_batched_time"] = loop["seconds"] / batched["seconds"]
            batched["loop_over_batched_cpu"] = loop["cpu_s"] / batched["cpu_s"]
            batched["max_rel_diff_vs_loop"] = rel
            print(f"{'':>22} per-coil loop / batched: wall time {batched['loop_over_batched_time']:.2f}, "
                  f"CPU time {batched['loop_over_batched_cpu']:.2f}; "
                  f"max |diff| / max |x| = {rel:.2e}", flush=True)
            if not agree:
                raise SystemExit(f"Algorithm {alg}: batched and per-coil results differ (relative {rel:.2e} > "
                                 f"{AGREE_RTOL:g})")
    counter.handle.remove()

    cols = [("name", "algorithm"), ("batch_coils", "batch_coils"), ("size", "C, H, W"), ("N", "N"),
            ("seconds", "s / recon"), ("per_iter_s", "s / iter"), ("cpu_s", "CPU s"), ("network_calls", "net calls"),
            ("images_per_call", "images / call"), ("fraction_of_gemm", "frac GEMM"),
            ("loop_over_batched_time", "loop / batched time"), ("loop_over_batched_cpu", "loop / batched CPU"),
            ("max_rel_diff_vs_loop", "rel diff vs loop"),
            ("other_procs_cpu_s", "other procs CPU s"), ("load_1m", "load 1m")]
    info = common.machine_info(device)
    text = "\n".join([
        f"# Sampler speed{' (QUICK: 64x64 crops, numbers meaningless)' if args.quick else ''}", "",
        f"Embedded prior ({CONFIG}), {'random weights' if not args.ckpt else args.ckpt}, fixed mode, N={args.N}, "
        f"{'plain PyTorch' if args.plain else 'perf settings on (allocator, channels_last, inference_mode)'}; "
        f"{info['cpu_model']}, {info['torch_threads']} threads, torch {info['torch']}.", "",
        "Network FLOPs per image: " + ", ".join(f"{s}x{s}: {f / 1e9:.1f} GFLOP" for s, f in flops_per_image.items())
        + ". frac GEMM: network FLOP/s over a same-run 2048^2 float32 GEMM (includes FFT/DC overhead).", "",
        common.markdown_table(rows, cols)])
    print(text)
    data = {"N": args.N, "crop": args.crop, "plain": args.plain, "ckpt": args.ckpt, "quick": args.quick,
            "flops_per_image": flops_per_image, "rows": rows, "records": records, "info": info}
    name = "sampler_speed" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    jpath, mpath = common.write_results(name, data, text, args.out)
    print(f"wrote {jpath} and {mpath}")
    return data


if __name__ == "__main__":
    main()
