"""Real scanner data: this project's multi-coil reconstructions against BART ``pics -l1``, in one run.

Cases (files in ``../shared/data``, read through the project's own readers):

* ``brain-8ch`` -- bart-workshop ``pics-brain/ksp.cfl``: a real 8-coil brain slice (180 x 230) already
  undersampled by a Poisson-disc mask (prospective, no ground truth). The reference is BART's own
  ``img.cfl`` (the first ESPIRiT map's image of the workshop's ``pics`` run).
* ``gre-2ch <mask>`` -- the twixtools GRE phantom ``gre.dat`` (Siemens twix, 2 coils, 160 x 160 after readout
  oversampling removal), fully sampled, retrospectively undersampled (gaussian1d / uniform1d x4, seed 0); the
  ground truth is the root-sum-of-squares of the fully sampled coil images.

Methods: zero-filled, BART ``ecalib -m1`` + ``pics -l1 -r 0.01``, and the reconstruction commands of this
project (SENSE sampler, Algorithm 4 SSOS, Algorithm 5 hybrid) run in-process through their CLI entry point with
the embedded prior's defaults (``--threads`` as given; ``--coils K`` SVD compression for SSOS / hybrid on the
8-coil case, whose network batch grows with the coil count). Metrics: fastMRI PSNR / SSIM on magnitudes after a
least-squares fit of one scale factor to the reference (BART and the projects' outputs are in different
units). Times are wall clock on the shared CPU (load average recorded), ours including ESPIRiT and model load.

    python benchmarks/real_data.py                    # every case and method (about 10 min on 2 shared cores)
    python benchmarks/real_data.py --methods sense    # the SENSE sampler only (BART and ZF always run)

Writes ``benchmarks/results/real_data.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from score_mri import metrics  # noqa: E402
from score_mri.io.readers import read_cfl, write_cfl  # noqa: E402

SHARED = Path(os.environ.get("SCORE_MRI_SHARED") or REPO.parent / "shared") / "data"
BRAIN = SHARED / "bart-workshop" / "ismrm2016" / "pics-brain"
GRE = SHARED / "twixtools" / "example_data" / "gre.dat"
RESULTS = REPO / "benchmarks" / "results"
METHODS = {"sense": ("multi-coil/SENSE", "SENSE"), "ssos": ("multi-coil/SSOS", "Alg4 SSOS"),
           "hybrid": ("multi-coil/hybrid", "Alg5 hybrid")}
BART_LAMBDA = 0.01


# ---------------------------------------------------------------------------------------------- helpers

def ls_scale(ref: np.ndarray, img: np.ndarray) -> float:
    """The least-squares factor s minimising ||ref - s img||^2 (magnitudes)."""
    den = float(np.sum(img.astype(np.float64) ** 2))
    return float(np.sum(ref.astype(np.float64) * img) / den) if den > 0 else 1.0


def score(ref: np.ndarray, img: np.ndarray) -> dict:
    """fastMRI PSNR / SSIM / NMSE of |img| against |ref| after a least-squares scale fit."""
    ref, img = np.abs(ref).astype(np.float64), np.abs(img).astype(np.float64)
    s = ls_scale(ref, img)
    m = metrics.evaluate(ref, s * img)
    return {"psnr": round(m["psnr"], 3), "ssim": round(m["ssim"], 4), "nmse": round(m["nmse"], 5), "scale": s}


def bart(*args: str, cwd: Path, threads: int) -> None:
    """Run one BART command (``threads`` OpenMP threads), raising with its message when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(["bart", *args], cwd=str(cwd), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bart {args[0]}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def bart_pics(ksp: np.ndarray, threads: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """BART ``ecalib -m1`` + ``pics -l1 -r 0.01`` of k-space [C, H, W] (zeros unmeasured): (|image|, seconds)."""
    C, H, W = ksp.shape
    with tempfile.TemporaryDirectory(prefix="bart_") as tmp:
        t = Path(tmp)
        write_cfl(t / "ksp", np.moveaxis(ksp, 0, -1)[:, :, None, :])          # [H, W, 1, C]
        tic = time.perf_counter()
        bart("ecalib", "-m1", "ksp", "maps", cwd=t, threads=threads)
        args = ["pics", "-S", "-l1", "-r", str(BART_LAMBDA)]
        if mask is not None:
            write_cfl(t / "pat", np.broadcast_to(mask, (H, W))[:, :, None, None])
            args += ["-p", "pat"]
        bart(*args, "ksp", "maps", "out", cwd=t, threads=threads)
        seconds = time.perf_counter() - tic
        return np.abs(read_cfl(t / "out").reshape(H, W)), seconds


def run_ours(method: str, data: Path, save: Path, threads: int, extra: list[str]) -> tuple[np.ndarray, dict, float]:
    """One of this project's commands in-process on ``data``: (|recon| [H, W], metrics record, wall seconds)."""
    from score_mri.cli import common as ic
    from score_mri.cli.scripts import SCRIPTS
    argv = ["--data", str(data), "--save_dir", str(save), "--device", "cpu", "--threads", str(threads),
            "--seed", "0", "--quiet", *extra]
    tic = time.perf_counter()
    record = ic.run(SCRIPTS[method], argv)
    wall = time.perf_counter() - tic
    name = record["name"]
    recon = np.abs(np.load(save / METHODS[method][0] / "recon" / f"{name}.npy"))
    return recon, record, wall


def load_gre() -> tuple[np.ndarray, np.ndarray]:
    """The GRE phantom's coil images [C, H, W] (the project's twix reader) and their RSS (ground truth)."""
    from score_mri.io.readers import InputKind, read_problem
    problem = read_problem(GRE, InputKind("multi-coil", coils=True, real_valued=False), None, None, 96)
    coils = problem.image * problem.scale
    return coils, np.sqrt((np.abs(coils) ** 2).sum(0))


def fft2c(x: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def zero_filled_rss(ksp: np.ndarray) -> np.ndarray:
    """Zero-filled image of k-space [C, H, W]: RSS over coils of the centred orthonormal inverse 2-D FFT."""
    ax = (-2, -1)
    return np.sqrt((np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(ksp, axes=ax), norm="ortho"), axes=ax)) ** 2)
                   .sum(0))


# ---------------------------------------------------------------------------------------------- cases

def brain_case(methods: list[str], threads: int, coils: int, work: Path) -> tuple[list[dict], dict]:
    """The prospective 8-coil brain slice against BART's stored ``pics`` image."""
    from score_mri.io.readers import cfl_to_kspace
    ksp = cfl_to_kspace(read_cfl(BRAIN / "ksp.cfl"))                                # [8, 180, 230]
    ref = np.abs(read_cfl(BRAIN / "img.cfl")[0, :, :, 0, 0]).reshape(ksp.shape[-2:])       # [180, 230], map 1
    zf = zero_filled_rss(ksp)
    mask = (np.abs(ksp) > 0).any(0)
    case = {"case": "brain-8ch", "data": "bart-workshop pics-brain ksp.cfl", "coils": 8, "shape": list(ref.shape),
            "mask": f"Poisson-disc (given) R={1 / mask.mean():.1f}", "reference": "BART img.cfl (map 1)"}
    images = {"reference": ref, "ZF": zf}
    rows = [{**case, "method": "ZF", **score(ref, zf), "seconds": 0.0}]
    rows += _bart_row(case, images, ref, lambda: bart_pics(ksp, threads))
    for m in methods:
        extra = ["--coils", str(coils)] if m in ("ssos", "hybrid") and coils < 8 else []
        rows += _our_row(case, images, ref, m, BRAIN / "ksp.cfl", work / f"brain-{m}", threads, extra,
                         note=f"--coils {coils}" if extra else "")
    return rows, images


def gre_case(mask_type: str, methods: list[str], threads: int, work: Path) -> tuple[list[dict], dict]:
    """The fully sampled twix phantom, retrospectively undersampled x4 with ``mask_type``."""
    from score_mri import recon as rc
    coils, gt = load_gre()
    mask = rc.simulate_mask((1, 1, *gt.shape), mask_type, 4, 0.08, 0)[0, 0].numpy()   # the CLI's mask (seed 0)
    y = fft2c(coils) * mask
    zf = zero_filled_rss(y)
    case = {"case": f"gre-2ch {mask_type} x4", "data": "twixtools gre.dat", "coils": int(coils.shape[0]),
            "shape": list(gt.shape), "mask": f"{mask_type} x4 (seed 0)", "reference": "RSS of fully sampled"}
    images = {"reference": gt, "ZF": zf}
    rows = [{**case, "method": "ZF", **score(gt, zf), "seconds": 0.0}]
    rows += _bart_row(case, images, gt, lambda: bart_pics(y.astype(np.complex64), threads, mask))
    flags = ["--mask_type", mask_type, "--acc_factor", "4"]
    for m in methods:
        rows += _our_row(case, images, gt, m, GRE, work / f"gre-{mask_type}-{m}", threads, flags,
                         check_mask=mask)
    return rows, images


def _bart_row(case: dict, images: dict, ref: np.ndarray, fn) -> list[dict]:
    """BART's row (or its error)."""
    if shutil.which("bart") is None:
        return [{**case, "method": "BART pics-l1", "error": "bart not on PATH"}]
    try:
        img, seconds = fn()
    except RuntimeError as e:
        return [{**case, "method": "BART pics-l1", "error": str(e)}]
    images["BART pics-l1"] = img
    row = {**case, "method": "BART pics-l1", **score(ref, img), "seconds": round(seconds, 2),
           "settings": f"ecalib -m1; pics -S -l1 -r {BART_LAMBDA}"}
    _print(row)
    return [row]


def _our_row(case: dict, images: dict, ref: np.ndarray, method: str, data: Path, save: Path, threads: int,
             extra: list[str], note: str = "", check_mask: np.ndarray | None = None) -> list[dict]:
    """One of this project's rows (or its one-line error)."""
    from score_mri.errors import UserError
    label = METHODS[method][1]
    try:
        img, record, wall = run_ours(method, data, save, threads, extra)
    except UserError as e:
        row = {**case, "method": label, "error": str(e)}
        print(f"  {case['case']:22s} {label:14s} error: {e}", flush=True)
        return [row]
    if check_mask is not None:  # the CLI simulated the same mask as BART got
        used = np.load(save / METHODS[method][0] / "input" / f"{record['name']}_mask.npy")
        assert np.array_equal(used, check_mask), "mask mismatch between the CLI run and BART"
    images[label] = img
    row = {**case, "method": label, **score(ref, img), "seconds": round(wall, 2),
           "sampler_seconds": record["seconds"], "network_calls": record["network_calls"],
           "settings": " ".join(f"N={record['N']} {record['predictor']}/{record['corrector']} "
                                f"{'' if record.get('t0') is None else 't0=%g' % record['t0']} "
                                f"{record.get('complex_mode', '')} {_weighting(record)} {note}".split()),
           "relative_noise": record.get("relative_noise"), "cli_metrics": record.get("recon")}
    _print(row)
    return [row]


def _weighting(record: dict) -> str:
    """'noise-weighted (noise X %)' for a SENSE run whose data consistency is weighted by the estimated noise."""
    if record.get("noise_weighting") != "auto" or record.get("relative_noise") is None:
        return ""
    return f"noise-weighted (noise {100 * record['relative_noise']:.2g} %)"


def _print(row: dict) -> None:
    """One progress line."""
    print(f"  {row['case']:22s} {row['method']:14s} {row['psnr']:6.2f} dB {row['ssim']:.4f} {row['seconds']:7.1f} s",
          flush=True)


# ---------------------------------------------------------------------------------------------- output

def figure(path: Path, panels: list[tuple[str, dict, list[dict]]]) -> None:
    """One row per case: reference, ZF, BART, ours (magnitudes scaled to the reference), PSNR / SSIM titles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = max(len(images) for _, images, _ in panels)
    fig, axes = plt.subplots(len(panels), cols, figsize=(2.4 * cols, 2.7 * len(panels)), squeeze=False)
    for r, (title, images, rows) in enumerate(panels):
        by = {row["method"]: row for row in rows if "psnr" in row}
        ref = images["reference"]
        vmax = float(np.percentile(ref, 99.5))
        for c, (name, img) in enumerate(images.items()):
            ax = axes[r, c]
            shown = img if name == "reference" else img * ls_scale(ref, img)
            ax.imshow(shown, cmap="gray", vmin=0, vmax=vmax)
            sub = "" if name == "reference" else f"\n{by[name]['psnr']:.2f} dB / {by[name]['ssim']:.3f}"
            ax.set_title((f"{title}\n" if c == 0 else "\n") + name + sub, fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(rows: list[dict], info: dict) -> str:
    """The results table."""
    lines = [f"# Real scanner data: this project vs BART pics -l1 ({info['date']})", "",
             f"`python benchmarks/real_data.py{info['argv']}`; {info['threads']} thread(s) each on a shared "
             f"2-core CPU (load average {info['load_before']} before, {info['load_after']} after). PSNR / SSIM "
             "on magnitudes after a least-squares scale fit to the reference; time = wall clock (ours: the whole "
             "command in-process, with ESPIRiT and model load).", "",
             "| case | reference | method | PSNR (dB) | SSIM | time (s) | settings |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['reference']} | {r['method']} | - | - | - | error: {r['error']} |")
        else:
            lines.append(f"| {r['case']} | {r['reference']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                         f"{r['seconds']:.1f} | {r.get('settings', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run every case and write the table, the JSON and the figure."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="sense,ssos,hybrid", help="this project's methods (sense, ssos, hybrid)")
    p.add_argument("--cases", default="brain,gre-gaussian1d,gre-uniform1d", help="cases to run")
    p.add_argument("--threads", type=int, default=1, help="threads of BART and of the prior (each)")
    p.add_argument("--coils", type=int, default=4, help="virtual coils of SSOS / hybrid on the 8-coil case")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if not set(methods) <= set(METHODS):
        p.error(f"--methods: choose from {', '.join(METHODS)}")
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": args.threads,
            "argv": "" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv if argv is not None
                                                                               else sys.argv[1:]),
            "load_before": [round(v, 2) for v in os.getloadavg()], "coils": args.coils}
    rows, panels = [], []
    tic = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="real_data_") as tmp:
        for case in args.cases.split(","):
            if case == "brain":
                if not (BRAIN / "ksp.cfl").is_file():
                    print(f"skip brain: {BRAIN} not found")
                    continue
                r, images = brain_case(methods, args.threads, args.coils, Path(tmp))
                panels.append(("brain-8ch (prospective)", images, r))
            elif case.startswith("gre-"):
                if not GRE.is_file():
                    print(f"skip {case}: {GRE} not found")
                    continue
                mask_type = case.split("-", 1)[1]
                r, images = gre_case(mask_type, methods, args.threads, Path(tmp))
                panels.append((f"gre-2ch {mask_type} x4", images, r))
            else:
                p.error(f"unknown case {case}")
            rows += r
    info["load_after"] = [round(v, 2) for v in os.getloadavg()]
    info["total_seconds"] = round(time.perf_counter() - tic, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_data.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=str) + "\n")
    (out / "real_data.md").write_text(markdown(rows, info))
    if panels:
        figure(out / "real_data.png", panels)
    print(f"{len(rows)} rows in {info['total_seconds']:.0f} s -> {out / 'real_data.md'}")


if __name__ == "__main__":
    main()
