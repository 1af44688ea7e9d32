"""Complex single-coil and multi-coil reconstruction: ZF, BART ``pics -l1``, Algorithms 3 (ri / phase), 4, 5 and
the SENSE sampler, on the shipped samples, synthetic cases (open ANTsPy T1 slices x smooth random phase x
simulated birdcage coils) and the fastMRI knee slice of ``../shared/data`` (evaluation only, never shipped).

One command; results in benchmarks/results/complex_multicoil{_suffix}.{md,json}, rewritten after every case::

    python benchmarks/complex_multicoil.py                 # default cases (about 20 min on 2 idle cores)
    python benchmarks/complex_multicoil.py --quick         # 128 px crops, N = 20: a smoke run (minutes)

Metrics: fastMRI PSNR / SSIM on magnitude images against |x| (for coil data the RSS of the coil images,
= |x| with normalised simulated maps). BART's lambda is fixed (benchmarks/classical.py, tuned on one image).
ESPIRiT maps (BART and the SENSE sampler) come from the measured calibration block only.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import classical  # noqa: E402
from score_mri import metrics  # noqa: E402
from score_mri import recon  # noqa: E402
import sampling  # noqa: E402
from score_mri.cli.flags import load_config  # noqa: E402
from common import REPO, machine_info, markdown_table, write_results  # noqa: E402
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian  # noqa: E402
from score_mri.physics.sens_maps import espirit  # noqa: E402
from utils import calib_width  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
CONFIG, CKPT = REPO / "configs/ve/colin27_ncsnpp_small.py", REPO / "weights/colin27_ncsnpp_small.pth"
CF = 0.08  # centre fraction of the 1-D masks (at least 14 columns: ESPIRiT needs a 12 x 12 block)


def _make_samples():
    """scripts/make_samples.py (smooth_phase, coil_maps): the same synthetic phase and coils as the samples."""
    spec = importlib.util.spec_from_file_location("_make_samples", REPO / "scripts" / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@dataclass(frozen=True)
class Case:
    """One benchmark case: an image source, coils (0: single-coil), size, mask and seed."""
    name: str
    source: str                 # 'sample-sc', 'sample-mc', 'knee', 'ants:<slice>'
    coils: int
    size: int
    mask: str
    acc: float
    seed: int
    heavy: bool = False         # run Algorithms 4 and 5 (2C / C images per network call) on this case


CASES = [
    Case("sample-sc", "sample-sc", 0, 256, "uniform1d", 8, 0),
    Case("ants-r62-sc", "ants:r62", 0, 256, "gaussian1d", 4, 1),
    Case("knee-sc", "knee", 0, 256, "uniform1d", 8, 2),
    Case("sample-mc8", "sample-mc", 8, 192, "uniform1d", 8, 3, heavy=True),
    Case("ants-r27-mc8", "ants:r27", 8, 256, "gaussian1d", 4, 4),
    Case("ants-r85-mc15", "ants:r85", 15, 320, "uniform1d", 8, 5),
]


def _crop(x: np.ndarray, size: int) -> np.ndarray:
    """Centre crop (or zero-pad) the last two axes to size x size."""
    out = np.zeros((*x.shape[:-2], size, size), x.dtype)
    H, W = x.shape[-2:]
    h, w = min(H, size), min(W, size)
    out[..., (size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = \
        x[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]
    return out


def load_case(case: Case, ms, size: int) -> np.ndarray:
    """The complex image [H, W] (single-coil) or coil images [C, H, W], magnitude (RSS) max 1."""
    if case.source == "sample-sc":
        x = _crop(np.load(REPO / "samples/single-coil/001.npy"), size)
    elif case.source == "sample-mc":
        x = _crop(np.load(REPO / "samples/multi-coil/001.npy"), size)
        return (x / np.sqrt((np.abs(x) ** 2).sum(0)).max()).astype(np.complex64)
    elif case.source == "knee":
        x = _crop(np.load(SHARED / "score-MRI/samples/single-coil/001.npy"), size)
    else:
        from skimage.io import imread
        from skimage.transform import resize
        img = imread(SHARED / f"ANTsPy/data/{case.source.split(':')[1]}slice.jpg", as_gray=True).astype(np.float64)
        img = resize(img, (size, size), anti_aliasing=True) if img.shape != (size, size) else img
        img = np.clip(img, 0, None)
        x = img / img.max() * np.exp(1j * ms.smooth_phase((size, size), seed=100 + case.seed))
    x = x / np.abs(x).max()
    if case.coils:
        x = ms.coil_maps(case.coils, size) * x[None]
    return x.astype(np.complex64)


def _metrics(gt: np.ndarray, img: np.ndarray) -> dict:
    """PSNR / SSIM on magnitude."""
    return {"psnr": round(metrics.psnr(gt, np.abs(img)), 3), "ssim": round(metrics.ssim(gt, np.abs(img)), 4)}


def run_case(case: Case, model, base: sampling.SamplerSettings, size: int, ms, methods: set[str],
             smoothing: float = 1.0, nonnegative: bool = True, finish_after_dc: bool = True) -> list[dict]:
    """All methods on one case; one row per method ('phase_ri smoothed': the embedded config's final steps, the
    imaginary residual smoothed by a Gaussian of ``smoothing`` pixels and, with ``nonnegative``, the real part
    clipped at zero, with ``finish_after_dc`` once more after the single-coil sampler's final data consistency;
    plain 'phase_ri' returns the last estimate as sampled)."""
    x = load_case(case, ms, size)
    coils = x[None] if not case.coils else x                                # [C, H, W]
    gt = np.sqrt((np.abs(coils) ** 2).sum(0))                             # |x| (RSS)
    mask = recon.simulate_mask((1, 1, size, size), case.mask, case.acc, max(CF, 14 / size),
                                case.seed)  # [1, 1, H, W]
    mask2d = mask[0, 0].numpy()
    y_c = classical.measure(coils, mask2d).astype(np.complex64)          # centered orthonormal [C, H, W]
    rows = []

    def add(method: str, img: np.ndarray, seconds: float, calls: int = 0, **extra) -> None:
        rows.append({"case": case.name, "coils": case.coils or 1, "size": size, "mask": f"{case.mask} x{case.acc:g}",
                     "method": method, **_metrics(gt, img), "seconds": round(seconds, 1), "network_calls": calls,
                     **extra})
        r = rows[-1]
        print(f"  {case.name:14s} {method:14s} {r['psnr']:6.2f} dB {r['ssim']:.4f} {r['seconds']:7.1f} s "
              f"{calls} calls", flush=True)

    add("ZF", classical.zero_filled(y_c), 0.0)
    if classical.bart_available():
        tic = time.time()
        lam = classical.BART_LAMBDA["multi-coil" if case.coils else "single-coil"]
        add("BART pics-l1", classical.bart_pics(y_c, mask2d, lamda=lam), time.time() - tic, lamda=lam)

    def prior(method: str, sampler: str, op, y: torch.Tensor, settings, extra_s: float = 0.0) -> None:
        if method not in methods:
            return
        out = recon.reconstruct(model, sampler, op, y, settings, generator=torch.Generator().manual_seed(case.seed))
        add(method, out.image, out.seconds + extra_s, out.network_calls)

    xt = torch.from_numpy(coils)[None]                                    # [1, C, H, W]
    if not case.coils:
        op = SingleCoilCartesian(mask)
        y = op.A(xt)
        prior("Alg3 ri", "complex", op, y, base.replace(complex_mode="ri"))
        prior("Alg3 phase", "complex", op, y, base.replace(complex_mode="phase"))
        prior("Alg3 phase_ri", "complex", op, y, base.replace(complex_mode="phase_ri"))
        prior("Alg3 phase_ri smoothed", "complex", op, y, base.replace(complex_mode="phase_ri",
                                                                       residual_smoothing=smoothing,
                                                                       nonnegative=nonnegative,
                                                                       finish_after_dc=finish_after_dc))
        return rows
    cart = MultiCoilCartesian(mask.expand(1, case.coils, size, size))
    y = cart.A(xt)
    tic = time.time()
    sens = torch.from_numpy(espirit(y[0].numpy(), calib_width(mask2d)))[None]
    t_esp = time.time() - tic
    op = SENSE(sens, mask)
    prior("SENSE ri", "sense", op, y, base.replace(complex_mode="ri"), t_esp)
    prior("SENSE phase", "sense", op, y, base.replace(complex_mode="phase"), t_esp)
    prior("SENSE phase_ri", "sense", op, y, base.replace(complex_mode="phase_ri"), t_esp)
    prior("SENSE phase_ri smoothed", "sense", op, y, base.replace(complex_mode="phase_ri",
                                                                  residual_smoothing=smoothing,
                                                                  nonnegative=nonnegative), t_esp)
    if case.heavy:
        prior("Alg4 ri", "ssos", cart, y, base.replace(complex_mode="ri"))
        prior("Alg5 ri", "hybrid", op, y, base.replace(complex_mode="ri"), t_esp)
        prior("Alg5 phase", "hybrid", op, y, base.replace(complex_mode="phase"), t_esp)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Mean over the non-knee cases of each (single/multi-coil, method), with the gain over BART and ZF."""
    out = []
    for group, multi in (("single-coil", False), ("multi-coil", True)):
        sel = [r for r in rows if (r["coils"] > 1) == multi and not r["case"].startswith("knee")]
        cases = sorted({r["case"] for r in sel})
        ref = {(r["case"], r["method"]): r for r in sel}
        for m in dict.fromkeys(r["method"] for r in sel):
            both = [c for c in cases if (c, m) in ref and (c, "BART pics-l1") in ref]
            if not both:
                continue
            d_psnr = np.mean([ref[c, m]["psnr"] - ref[c, "BART pics-l1"]["psnr"] for c in both])
            d_ssim = np.mean([ref[c, m]["ssim"] - ref[c, "BART pics-l1"]["ssim"] for c in both])
            vs_zf = min(ref[c, m]["psnr"] - ref[c, "ZF"]["psnr"] for c in both)
            out.append({"group": group, "method": m, "cases": len(both),
                        "psnr": np.mean([ref[c, m]["psnr"] for c in both]),
                        "ssim": np.mean([ref[c, m]["ssim"] for c in both]),
                        "dpsnr_bart": d_psnr, "dssim_bart": d_ssim, "min_dpsnr_zf": vs_zf})
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write its table and JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="128 px crops and N = 20 (a smoke run)")
    p.add_argument("--N", type=int, default=None, help="diffusion steps (default: the config's, 50)")
    p.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    p.add_argument("--methods", default="Alg3 ri,Alg3 phase,Alg3 phase_ri,Alg3 phase_ri smoothed,SENSE ri,"
                                        "SENSE phase,SENSE phase_ri,SENSE phase_ri smoothed,Alg4 ri,Alg5 ri,"
                                        "Alg5 phase",
                   help="comma-separated prior methods")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--suffix", default="", help="results file name suffix")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(CONFIG)
    s = config.sampling
    N = args.N or (20 if args.quick else int(s.N))
    final = sampling.SamplerSettings.from_config(config)  # the config's final steps ('phase_ri smoothed')
    # every method at the config's sampling settings (start, SENSE noise weighting, ...), its final steps off
    base = sampling.SamplerSettings.from_config(config, N=N, m_steps=max(1, final.m_steps * N // int(s.N)),
                                                residual_smoothing=0.0, nonnegative=False, finish_after_dc=False)
    model = recon.load_model(config, CKPT, "cpu")
    ms = _make_samples()
    by_name = {c.name: c for c in CASES}
    if args.cases is not None and not set(args.cases.split(",")) <= set(by_name):
        p.error(f"unknown case in --cases (known: {', '.join(by_name)})")
    cases = CASES if args.cases is None else [by_name[n] for n in args.cases.split(",")]  # in the given order
    methods = set(args.methods.split(","))
    rows: list[dict] = []
    name = "complex_multicoil" + args.suffix
    for case in cases:
        size = 128 if args.quick else case.size
        rows += run_case(case, model, base, size, ms, methods, final.residual_smoothing or 1.0, final.nonnegative,
                         final.finish_after_dc)
        summ = summary(rows)
        data = {"settings": {"N": N, "predictor": s.predictor, "corrector": s.corrector, "snr": float(s.snr),
                             "cg_iters": base.cg_iters, "gamma": base.gamma, "quick": args.quick,
                             "residual_smoothing": final.residual_smoothing or 1.0,
                             "nonnegative": final.nonnegative, "finish_after_dc": final.finish_after_dc,
                             "noise_weighting": base.noise_weighting, "t0": base.t0, "t0_clean": base.t0_clean,
                             "flip_cycle": base.flip_cycle, "threads": args.threads}, "machine": machine_info(torch.device("cpu")),
                "rows": rows, "summary": summ}
        md = (f"# Complex and multi-coil benchmark (N = {N}{', quick: 128 px' if args.quick else ''})\n\n"
              + markdown_table(rows, [("case", "case"), ("coils", "coils"), ("size", "px"), ("mask", "mask"),
                                      ("method", "method"), ("psnr", "PSNR"), ("ssim", "SSIM"),
                                      ("seconds", "s"), ("network_calls", "calls")])
              + "\n\n## Mean over the non-knee cases (difference to BART pics-l1; worst case vs ZF)\n\n"
              + markdown_table(summ, [("group", "data"), ("method", "method"), ("cases", "cases"),
                                      ("psnr", "PSNR"), ("ssim", "SSIM"), ("dpsnr_bart", "dPSNR vs BART"),
                                      ("dssim_bart", "dSSIM vs BART"), ("min_dpsnr_zf", "min dPSNR vs ZF")]))
        write_results(name, data, md)


if __name__ == "__main__":
    main()
