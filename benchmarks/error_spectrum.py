"""Error spectrum: where in k-space the reconstruction error sits, against the noise the ground truth carries.

A ground truth that is itself a noisy scan (the fastMRI knee magnitudes) carries white noise in every
k-space sample. In the measured samples the data reproduce it exactly; in the unmeasured ones no method can
predict it, so the best possible error there is the noise power. This benchmark measures that floor and the
PSNR it allows, and splits the error of the score prior and of BART ``pics -l1`` into radial bands of the
unmeasured k-space, on the real-valued cases of ``benchmarks/prior_quality.py`` (same images, masks and
seeds as its default run with ``--per_source 3``; gaussian1d x4; the embedded prior at its defaults, 20
network calls):

* noise floor: s^2, s the noise standard deviation per k-space sample of the fully sampled ground truth,
  estimated as the project's sampler estimates it from data (``physics.noise.estimate_noise_std``: median
  power of the outermost tenth of the samples / ln 2; it includes what signal lies there, so it is an upper
  bound on the noise);
* noise-limited PSNR: the PSNR of a reconstruction that is exact in the measured samples and noise-free
  exact in the unmeasured ones (error power s^2 per unmeasured sample);
* per band (radius in units of the half-width of k-space; only unmeasured samples): mean power of the
  ground truth, and the mean error power of each method. An error near the floor is noise nobody can
  predict; an error above it is signal the method missed.

    OMP_NUM_THREADS=1 python benchmarks/error_spectrum.py            # ~3 min -> benchmarks/results/error_spectrum.*
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import prior_quality as pq  # noqa: E402
from benchmarks.common import machine_info, markdown_table, write_results  # noqa: E402
from score_mri.physics.fft import fft2c  # noqa: E402
from score_mri.physics.noise import estimate_noise_std  # noqa: E402

BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.35), (0.35, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, 1.5))
IMAGES = ("knee:001", "knee:002", "knee:003", "ants:r27", "vxm:112")
SHIPPED = "shipped=configs/ve/colin27_ncsnpp_small.py:weights/colin27_ncsnpp_small.pth"


def kspace(image: np.ndarray) -> np.ndarray:
    """Centered orthonormal 2-D FFT of a real or complex image [H, W] (the project's convention)."""
    return fft2c(torch.from_numpy(np.asarray(image, np.complex64))).numpy()


def radius(shape: tuple[int, int]) -> np.ndarray:
    """Distance of each k-space sample from the centre, in units of half the side (1 = edge midpoint)."""
    H, W = shape
    ky, kx = np.meshgrid((np.arange(H) - H // 2) / (H / 2), (np.arange(W) - W // 2) / (W / 2), indexing="ij")
    return np.sqrt(ky ** 2 + kx ** 2)


def noise_floor(gt: np.ndarray) -> float:
    """Noise power per k-space sample of a fully sampled image (the sampler's estimator, full mask)."""
    k = torch.from_numpy(kspace(gt))[None, None]
    return float(estimate_noise_std(k, torch.ones(1, 1, *gt.shape))[0]) ** 2


def psnr_from_error(gt: np.ndarray, error_power_sum: float) -> float:
    """PSNR (fastMRI definition, peak = max of the ground truth) of an error of this total k-space power."""
    mse = error_power_sum / gt.size                                    # Parseval (orthonormal FFT)
    return float(10 * np.log10(float(gt.max()) ** 2 / mse)) if mse > 0 else float("inf")


def spectrum(gt: np.ndarray, mask: np.ndarray, images: dict[str, np.ndarray]) -> dict[str, Any]:
    """Noise floor, noise-limited PSNR and per-band error powers of each image in ``images`` against ``gt``."""
    G = kspace(gt)
    r, unmeasured = radius(gt.shape), np.broadcast_to(mask, gt.shape) < 0.5
    floor = noise_floor(gt)
    errors = {name: np.abs(kspace(np.abs(img)) - G) ** 2 for name, img in images.items()}
    bands = []
    for lo, hi in BANDS:
        sel = unmeasured & (r >= lo) & (r < hi)
        if not sel.any():
            continue
        bands.append({"band": f"{lo:g}-{hi:g}", "samples": int(sel.sum()), "gt_power": float(np.mean(np.abs(G[sel]) ** 2)),
                      **{f"{name}_error": float(e[sel].mean()) for name, e in errors.items()}})
    return {"noise_floor": floor, "unmeasured_fraction": float(unmeasured.mean()),
            "noise_limited_psnr": psnr_from_error(gt, floor * float(unmeasured.sum())),
            "psnr": {name: psnr_from_error(gt, float(e.sum())) for name, e in errors.items()}, "bands": bands}


def markdown(result: dict[str, Any]) -> str:
    """The results as tables."""
    def db(v: float) -> str:
        return f"{v:.2f}"

    def power(v: float) -> str:
        return f"{v * 1e4:.0f}" if v * 1e4 >= 100 else f"{v * 1e4:.3g}"

    rows = [{"image": c["image"], "noise std": f"{c['noise_floor'] ** 0.5:.4f}",
             **{k: db(v) for k, v in c["psnr"].items()}, "ceiling": db(c["noise_limited_psnr"]),
             "prior vs BART": f"{c['psnr']['prior'] - c['psnr']['BART']:+.2f}",
             "ceiling vs BART": f"{c['noise_limited_psnr'] - c['psnr']['BART']:+.2f}"} for c in result["cases"]]
    cols = [("image", "image"), ("noise std", "noise std per sample"), ("ZF", "ZF PSNR"), ("BART", "BART"),
            ("prior", "prior"), ("ceiling", "noise-limited PSNR"), ("prior vs BART", "prior - BART"),
            ("ceiling vs BART", "ceiling - BART")]
    out = [f"# Error spectrum ({result['date']})", "",
           f"Machine: {result['machine']['cpu_model']}, torch {result['machine']['torch']}, "
           f"{result['threads']} thread(s); {result['seconds']:.0f} s. Real-valued cases of "
           "`benchmarks/prior_quality.py` (gaussian1d x4, same seeds), the embedded prior at its defaults. "
           "PSNR in dB, recomputed from the k-space error (equal to the image-domain PSNR).", "",
           markdown_table(rows, cols), "",
           "Per radial band of the unmeasured samples (radius in units of the half-width): mean power of the "
           "ground truth, the noise floor and each method's mean error power (x 1e-4).", ""]
    for c in result["cases"]:
        band_rows = [{"band": b["band"], "samples": b["samples"], "gt": power(b["gt_power"]),
                      "floor": power(c["noise_floor"]), **{k[:-6]: power(v) for k, v in b.items()
                                                          if k.endswith("_error")}} for b in c["bands"]]
        out += [f"### {c['image']}", "",
                markdown_table(band_rows, [("band", "radius"), ("samples", "samples"), ("gt", "ground truth"),
                                           ("floor", "noise floor"), ("ZF", "ZF error"), ("BART", "BART error"),
                                           ("prior", "prior error")]), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and write its table and JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", nargs="+", default=list(IMAGES), help="NAME:ID of prior_quality's images")
    p.add_argument("--ckpt", type=pq.parse_prior, default=pq.parse_prior(SHIPPED), metavar="NAME=CONFIG:PATH")
    p.add_argument("--per_source", type=int, default=3,
                   help="prior_quality's --per_source (it sets the images' order and so their mask seeds)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tic = time.time()
    images = pq.load_images(pq.default_data_root(), list(pq.SOURCES), args.per_source, None)
    unknown = set(args.images) - {im.name for im in images}
    if unknown:
        p.error(f"unknown image(s) {', '.join(sorted(unknown))}")
    config, model, _ = pq.load_prior(args.ckpt, "cpu")
    cases = [c for c in pq.make_cases(images, ["real"], [], 0) if c.image.name in args.images]
    out = []
    for case in cases:
        recs = {method: img for method, img, _, _ in pq.reference_images(case, bart=True)}
        rec, _, _ = pq.prior_reconstruction(case, model, config, None, "cpu")
        named = {"ZF": recs["ZF"], "BART": recs["BART pics-l1"], "prior": rec.image}
        out.append({"image": case.image.name, **spectrum(case.gt, case.mask2d, named)})
        c = out[-1]
        print(f"{c['image']:10s} noise std {c['noise_floor'] ** 0.5:.4f}  ZF {c['psnr']['ZF']:.2f}  BART "
              f"{c['psnr']['BART']:.2f}  prior {c['psnr']['prior']:.2f}  ceiling {c['noise_limited_psnr']:.2f}",
              flush=True)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
              "machine": machine_info(torch.device("cpu")), "ckpt": str(args.ckpt.path), "cases": out,
              "seconds": time.time() - tic}
    write_results("error_spectrum", result, markdown(result), args.out)
    return result


if __name__ == "__main__":
    main()
