"""Reconstruction-quality benchmark: zero-filled, sigpy L1-wavelet, BART ``pics`` and score-MRI.

Cases: the shipped samples (real/retrospective 001-003, single-coil 001, multi-coil 001) and, when the
evaluation-only folder ``<shared>/data/score-MRI/samples`` exists (``$SCORE_MRI_SHARED`` or
``<repo>/../shared``), its three fastMRI knee slices and its single-coil knee, read in place (never
copied). Masks: gaussian1d / uniform1d at x4 / x8 (centre fraction 0.08) from ``utils.get_mask`` with a
fixed seed, the same masks for every method. Metrics: fastMRI PSNR (data_range = gt.max()), SSIM, NMSE
on magnitude images (``metrics.py``); multi-coil ground truth = root-sum-of-squares of the coil images.

The classical lambdas are tuned once, on ONE image (samples/real/retrospective/001, gaussian1d x4,
as single-coil data and as simulated 8-coil data), by a small grid search that is recorded in the
results; they are then fixed for every case. score-MRI runs in-process through ``recon.reconstruct``
with each script's own flags, settings and operator (embedded config + weights by default, loaded once)
at each ``--N``, plus the few-step mode for each ``--t0``; it is skipped with a message when the weights
are missing.

    python benchmarks/recon_quality.py --quick            # reduced grid (~10 min on a 2-core CPU)
    python benchmarks/recon_quality.py --N 20 50 100 --t0 0.3
    python benchmarks/recon_quality.py --tiny --out /tmp/b # synthetic 48x48 cases (tests)

Writes ``<out>/recon_quality.json`` and ``<out>/recon_quality.md`` (default out: benchmarks/results).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from score_mri import metrics  # noqa: E402
from benchmarks import classical  # noqa: E402

MASKS_FULL = ("gaussian1d:4", "uniform1d:4", "gaussian1d:8", "uniform1d:8")
CENTER_FRACTION = 0.08
TUNE_CASE = "samples/real/retrospective/001"
TUNE_MASK = "gaussian1d:4"
ALGORITHMS = {  # family -> [(method name, script file)]
    "real": [("score", "inference_real.py")],
    "single-coil": [("score", "inference_single-coil.py")],
    "multi-coil": [("score-SSOS", "inference_multi-coil_SSOS.py"), ("score-hybrid", "inference_multi-coil_hybrid.py")],
}


@dataclass
class Case:
    """One fully sampled ground truth: x is [H, W] (real or complex) or coil images [C, H, W]."""
    name: str
    family: str                 # 'real' | 'single-coil' | 'multi-coil' (which score-MRI script)
    path: Path                  # the file the score-MRI script reads (--data)
    x: np.ndarray
    source: str                 # 'samples' | 'knee (evaluation only)' | 'synthetic'

    @property
    def gt(self) -> np.ndarray:
        """Magnitude ground truth [H, W] (root-sum-of-squares over coils)."""
        return classical.root_sum_of_squares(self.x) if self.family == "multi-coil" else np.abs(self.x)


# ----------------------------------------------------------------------------- cases
def shared_data() -> Path | None:
    """``<shared>/data/score-MRI/samples`` when present ($SCORE_MRI_SHARED, else <repo>/../shared)."""
    roots = [Path(os.environ["SCORE_MRI_SHARED"])] if os.environ.get("SCORE_MRI_SHARED") else []
    roots.append(REPO.parent / "shared")
    for root in roots:
        d = root / "data" / "score-MRI" / "samples"
        if d.is_dir():
            return d
    return None


def sample_cases(quick: bool) -> list[Case]:
    """The shipped samples with a ground truth (prospective ones have none)."""
    s = REPO / "samples"
    items = [("real/retrospective/001", "real")]
    if not quick:
        items += [("real/retrospective/002", "real"), ("real/retrospective/003", "real")]
    items += [("single-coil/001", "single-coil"), ("multi-coil/001", "multi-coil")]
    return [Case(f"samples/{rel}", fam, s / f"{rel}.npy", np.load(s / f"{rel}.npy"), "samples") for rel, fam in items]


def knee_cases(quick: bool) -> list[Case]:
    """fastMRI knee slices of the original repository (evaluation only, read in place)."""
    d = shared_data()
    if d is None:
        return []
    items = [("real/retrospective/001", "real")]
    if not quick:
        items += [("real/retrospective/002", "real"), ("real/retrospective/003", "real"),
                  ("single-coil/001", "single-coil")]
    return [Case(f"knee/{rel}", fam, d / f"{rel}.npy", np.load(d / f"{rel}.npy"), "knee (evaluation only)")
            for rel, fam in items if (d / f"{rel}.npy").is_file()]


def tiny_cases(folder: Path, size: int = 48) -> list[Case]:
    """Synthetic size x size cases (blurred Shepp-Logan; with a linear phase; 4 simulated coils) for tests."""
    import sigpy
    from scipy.ndimage import gaussian_filter

    folder.mkdir(parents=True, exist_ok=True)
    x = gaussian_filter(np.abs(sigpy.shepp_logan((size, size))), 1.0)
    x = (x / x.max()).astype(np.float32)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    xc = (x * np.exp(1j * (0.8 * xx + 0.5 * yy))).astype(np.complex64)
    coils = (classical.simulated_sens(4, (size, size)) * xc).astype(np.complex64)  # [4, H, W]
    cases = []
    for family, arr in (("real", x), ("single-coil", xc), ("multi-coil", coils)):
        np.save(folder / f"{family}.npy", arr)
        cases.append(Case(f"tiny/{family}", family, folder / f"{family}.npy", arr, "synthetic"))
    return cases


def make_mask(case: Case, spec: str, seed: int, center_fraction: float) -> np.ndarray:
    """[H, W] float32 mask from utils.get_mask, exactly as the score-MRI scripts draw it."""
    import torch
    import utils

    mask_type, acc = spec.split(":")
    H, W = case.x.shape[-2:]
    img = torch.zeros(1, 1, H, W)
    m = utils.get_mask(img, W, 1, type=mask_type, acc_factor=float(acc), center_fraction=center_fraction,
                       seed=seed)
    return m[0, 0].numpy().astype(np.float32)


# ----------------------------------------------------------------------------- classical
def classical_methods(bart: bool) -> dict[str, Any]:
    """name -> fn(y, mask, lamda) for the classical baselines available here."""
    fns = {"zf": lambda y, mask, lamda: classical.zero_filled(y), "sigpy-L1": classical.sigpy_l1}
    if bart:
        fns["bart-pics"] = classical.bart_pics
    return fns


def evaluate(gt: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """fastMRI metrics of |recon| against the magnitude ground truth."""
    return metrics.evaluate(gt.astype(np.float64), np.abs(recon).astype(np.float64))


def tune_lambdas(case: Case, mask: np.ndarray, grid: dict[str, list[float]], bart: bool,
                 n_coils: int) -> dict[str, Any]:
    """Grid search of lambda (best PSNR) on ONE image, as single-coil data and as simulated multi-coil data."""
    sens = classical.simulated_sens(n_coils, case.x.shape[-2:])
    setups = {"single-coil": classical.measure(case.x, mask), "multi-coil": classical.measure(case.x, mask, sens)}
    out: dict[str, Any] = {"case": case.name, "grid": {}, "chosen": {}}
    names = [("sigpy-L1", classical.sigpy_l1, grid["sigpy_l1"])]
    if bart:
        names.append(("bart-pics", classical.bart_pics, grid["bart_pics"]))
    for setup, y in setups.items():
        for name, fn, lamdas in names:
            rows = []
            for lam in lamdas:
                m = evaluate(case.gt, fn(y, mask, lam))
                rows.append({"lambda": lam, **m})
                print(f"  tune {setup:11s} {name:9s} lambda {lam:.0e}: PSNR {m['psnr']:.2f} SSIM {m['ssim']:.4f}")
            best = max(rows, key=lambda r: r["psnr"])
            out["grid"][f"{setup}/{name}"] = rows
            out["chosen"][f"{setup}/{name}"] = best["lambda"]
    return out


# ----------------------------------------------------------------------------- score-MRI
def _load_algorithm(script: str):
    """The ``ALGORITHM`` object of one inference script (file names contain '-', so load by path)."""
    path = REPO / script
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ALGORITHM


def model_status(config: Path, ckpt: Path) -> str | None:
    """None when score-MRI can run, else the reason it is skipped."""
    if not ckpt.is_file():
        return f"weights {ckpt} not found (train or download them; see README)"
    if not config.is_file():
        return f"config {config} not found"
    try:
        import sampling  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the checkout
        return f"cannot import the sampler: {type(e).__name__}: {e}"
    return None


_MODELS: dict[tuple[str, str, str], Any] = {}  # (config, ckpt, device) -> model, loaded once per process


def run_model(case: Case, script: str, spec: str, mask: np.ndarray, N: int, t0: float | None,
              args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One score-MRI reconstruction in-process: the script's settings and operator, ``recon.reconstruct``.

    Flags resolve exactly as on the script's command line (``inference_common.prepare``); the measured
    k-space uses the baselines' mask itself. Metrics on magnitude images.
    """
    import torch

    from score_mri.cli import common as ic
    from score_mri import recon
    import utils

    mask_type, acc = spec.split(":")
    argv = ["--data", str(case.path), "--mask_type", mask_type, "--acc_factor", acc,
            "--center_fraction", str(args.center_fraction), "--N", str(N), "--seed", str(args.seed),
            "--config", str(args.config), "--ckpt", str(args.ckpt), "--save_dir", str(workdir),
            "--device", args.device]
    if case.family == "real":
        argv += ["--task", "retrospective"]
    if t0 is not None:
        argv += ["--t0", str(t0)]
    alg = _load_algorithm(script)
    job = ic.prepare(alg, argv)
    task = getattr(job.args, "task", None)
    path = ic.resolve_data(job.args.data, alg.input, task, REPO)
    problem = ic.read_problem(path, alg.input, task, None, int(job.config.data.image_size))
    key = (str(args.config), str(args.ckpt), str(job.opts.device))
    if key not in _MODELS:
        _MODELS[key] = recon.load_model(job.config, job.args.ckpt, job.opts.device)
    model = _MODELS[key]
    device = next(model.parameters()).device
    image = torch.from_numpy(problem.image)[None].to(device)                              # [1, C, H, W]
    mask_t = torch.from_numpy(mask).to(device).expand(image.shape).contiguous()
    cart = alg.cartesian(mask_t)
    y = cart.A(image.to(torch.complex64))
    _, root = ic.root_of(job, problem.task)
    ctx = ic.Context(args=job.args, config=job.config, settings=job.settings, problem=problem, root=root, mask=mask_t,
                     y=y)
    op = alg.operator(ctx) if alg.operator is not None else cart
    rec = recon.reconstruct(model, alg.sampler, op, y, job.settings, num_samples=job.opts.num_samples,
                            generator=torch.Generator(device=device).manual_seed(job.opts.seed),
                            inverse_scaler=utils.get_data_inverse_scaler(job.config))
    label = recon.to_image(image, alg.input.real_valued)
    return {"metrics": evaluate(np.abs(label), np.abs(rec.image)), "seconds": round(rec.seconds, 3),
            "network_calls": rec.network_calls}


# ----------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    """Markdown tables, one per family: PSNR / SSIM per case and mask, one column per method."""
    rows = result["rows"]
    lines = [f"# Reconstruction quality ({result['created']})", "",
             f"Machine: {result['machine']}. Masks: utils.get_mask seed {result['seed']}, centre fraction "
             f"{result['center_fraction']}. Cells: PSNR (dB) / SSIM on magnitude images (fastMRI definitions; "
             "multi-coil ground truth = RSS of the coil images).", ""]
    if result.get("model_skipped"):
        lines += [f"score-MRI skipped: {result['model_skipped']}", ""]
    lam = result["lambdas"]
    lines += [f"Classical lambdas ({lam['how']}): " + ", ".join(f"{k} = {v:g}" for k, v in lam["chosen"].items()), ""]
    for family in dict.fromkeys(r["family"] for r in rows):
        fam = [r for r in rows if r["family"] == family]
        methods = list(dict.fromkeys(r["method"] for r in fam))
        lines += [f"## {family}", "", "| case | mask | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for case, mask in dict.fromkeys((r["case"], r["mask"]) for r in fam):
            cell = {r["method"]: f"{r['psnr']:.2f} / {r['ssim']:.3f}" for r in fam
                    if r["case"] == case and r["mask"] == mask}
            lines.append(f"| {case} | {mask} | " + " | ".join(cell.get(m, "") for m in methods) + " |")
        lines += ["", "Seconds per reconstruction (mean): " + ", ".join(
            f"{m} {np.mean([r['seconds'] for r in fam if r['method'] == m]):.1f}" for m in methods), ""]
    if "grid" in lam:
        lines += ["## Lambda grid search", "", f"On {lam['case']} ({lam['mask']}); best PSNR chosen.", "",
                  "| setup/method | lambda | PSNR | SSIM |", "|---|---|---|---|"]
        for key, grid in lam["grid"].items():
            lines += [f"| {key} | {g['lambda']:g} | {g['psnr']:.2f} | {g['ssim']:.4f} |" for g in grid]
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    from score_mri.cli import common as ic

    from score_mri.cli.flags import Parser

    p = Parser(description=__doc__.splitlines()[0])  # usage errors: one line, exit status 2
    p.add_argument("--N", type=int, nargs="+", default=None,
                   help="score-MRI step counts (default 20 50 100; --quick 10; --tiny 3)")
    p.add_argument("--t0", type=float, nargs="*", default=[], help="also run the few-step mode from each t0")
    p.add_argument("--masks", nargs="+", default=None,
                   help=f"TYPE:ACC (default {' '.join(MASKS_FULL)}; --quick/--tiny gaussian1d:4)")
    p.add_argument("--center_fraction", type=float, default=CENTER_FRACTION)
    p.add_argument("--seed", type=int, default=0, help="mask (and sampler) seed")
    p.add_argument("--quick", action="store_true",
                   help="reduced grid: N=10, gaussian1d:4, fewer cases, score-MRI on real and single-coil only, "
                        "lambdas from classical.py (no tuning)")
    p.add_argument("--tiny", action="store_true", help="synthetic 48x48 cases only (tests; centre fraction 0.25)")
    p.add_argument("--no_tune", action="store_true", help="use classical.py's lambdas instead of the grid search")
    p.add_argument("--no_model", action="store_true", help="classical baselines only")
    p.add_argument("--model_families", nargs="+", choices=list(ALGORITHMS), default=None,
                   help="families that get score-MRI runs (default: all; --quick: real single-coil, since one "
                        "multi-coil run costs 16 network calls per step and coil)")
    p.add_argument("--no_knee", action="store_true", help="skip the evaluation-only knee slices")
    p.add_argument("--no_bart", action="store_true", help="skip BART even when it is on PATH")
    p.add_argument("--config", type=Path, default=ic.DEFAULT_CONFIG)
    p.add_argument("--ckpt", type=Path, default=ic.DEFAULT_CKPT)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    small = args.quick or args.tiny
    if args.N is None:
        args.N = [3] if args.tiny else [10] if args.quick else [20, 50, 100]
    if args.model_families is None:
        args.model_families = ["real", "single-coil"] if args.quick else list(ALGORITHMS)
    if args.masks is None:
        args.masks = ["gaussian1d:4"] if small else list(MASKS_FULL)
    args.no_tune = args.no_tune or small
    if args.tiny:
        args.no_knee = True
        if args.center_fraction == CENTER_FRACTION:
            args.center_fraction = 0.25  # 48 columns: 12 fully sampled centre columns for ESPIRiT
    for spec in args.masks:
        mask_type, _, acc = spec.partition(":")
        if mask_type not in ic.MASK_TYPES or not acc.replace(".", "", 1).isdigit() or float(acc) < 1:
            p.error(f"--masks: expected TYPE:ACC with TYPE in {', '.join(ic.MASK_TYPES)} and ACC >= 1 "
                    f"(e.g. gaussian1d:4), got {spec!r}")
    return args


def fixed_lambdas() -> dict[str, Any]:
    """The lambdas stored in classical.py (from an earlier grid search)."""
    return {"how": "fixed, from benchmarks/classical.py",
            "chosen": {f"{s}/{m}": lam for s in ("single-coil", "multi-coil")
                       for m, lam in (("sigpy-L1", classical.SIGPY_LAMBDA[s]),
                                      ("bart-pics", classical.BART_LAMBDA[s]))}}


def benchmark_case(case: Case, spec: str, args: argparse.Namespace, lambdas: dict[str, Any], bart: bool,
                   model_skipped: str | None, workdir: Path) -> list[dict[str, Any]]:
    """Every method on one case and mask: classical baselines, then score-MRI at each N (and t0)."""
    mask = make_mask(case, spec, args.seed, args.center_fraction)
    y = classical.measure(case.x, mask)
    base = {"case": case.name, "source": case.source, "family": case.family, "mask": spec,
            "sampled_fraction": float(mask.mean())}
    setup = "multi-coil" if case.family == "multi-coil" else "single-coil"
    rows = []

    def add(label: str, m: dict[str, float], **extra: Any) -> None:
        rows.append({**base, "method": label, **m, **extra})
        print(f"{case.name:34s} {spec:13s} {label:22s} PSNR {m['psnr']:6.2f} SSIM {m['ssim']:.4f} "
              f"({extra['seconds']:.1f} s)")

    for name, fn in classical_methods(bart).items():
        lam = lambdas["chosen"].get(f"{setup}/{name}")
        tic = time.time()
        recon = fn(y, mask, lam)
        add(name, evaluate(case.gt, recon), **{"lambda": lam, "seconds": round(time.time() - tic, 3)})
    if model_skipped or case.family not in args.model_families:
        return rows
    runs = [(N, None) for N in args.N] + [(N, t0) for t0 in args.t0 for N in args.N]
    for method, script in ALGORITHMS[case.family]:
        for N, t0 in runs:
            label = f"{method} N={N}" + (f" t0={t0:g}" if t0 is not None else "")
            try:
                out = run_model(case, script, spec, mask, N, t0, args, workdir)
            except Exception as e:  # one failing run must not lose the others
                print(f"{case.name:34s} {spec:13s} {label:22s} FAILED: {type(e).__name__}: {e}")
                continue
            add(label, out["metrics"], N=N, t0=t0, seconds=out["seconds"], network_calls=out["network_calls"])
    return rows


def _display(path: Path) -> str:
    """A path relative to the repository when it lies inside it (results stay portable)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    """Run the grid and write recon_quality.json / .md."""
    args = parse_args(argv)
    bart = classical.bart_available() and not args.no_bart
    if not bart:
        why = "--no_bart" if args.no_bart else "bart not on PATH; apt-get install bart"
        print(f"bart-pics: skipped ({why})")
    skipped = "--no_model" if args.no_model else model_status(args.config, args.ckpt)
    if skipped:
        skipped = skipped.replace(str(REPO) + os.sep, "")
        print(f"score-MRI: skipped ({skipped})")
    with tempfile.TemporaryDirectory(prefix="recon_quality_") as scratch:
        work = Path(scratch)
        if args.tiny:
            cases = tiny_cases(work / "tiny")
        else:
            cases = sample_cases(args.quick) + ([] if args.no_knee else knee_cases(args.quick))
            if not args.no_knee and shared_data() is None:
                print("knee slices: skipped (no <shared>/data/score-MRI; set SCORE_MRI_SHARED)")
        if args.no_tune:
            lambdas = fixed_lambdas()
        else:
            tune_case = next(c for c in cases if c.name == TUNE_CASE)
            print(f"tuning lambda on {tune_case.name} ({TUNE_MASK})")
            lambdas = tune_lambdas(tune_case, make_mask(tune_case, TUNE_MASK, args.seed, args.center_fraction),
                                   classical.LAMBDA_GRID, bart, classical.N_COILS_TUNE)
            lambdas.update(how="grid search on one image", mask=TUNE_MASK)
        rows = [row for case in cases for spec in args.masks
                for row in benchmark_case(case, spec, args, lambdas, bart, skipped, work / "runs")]

    result = {"created": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()}, {os.cpu_count()} cpu",
              "seed": args.seed, "center_fraction": args.center_fraction, "masks": args.masks, "N": args.N,
              "t0": args.t0, "model_families": args.model_families, "quick": args.quick, "tiny": args.tiny,
              "bart": bart, "model_skipped": skipped, "config": _display(args.config), "ckpt": _display(args.ckpt),
              "lambdas": lambdas, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recon_quality.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (args.out / "recon_quality.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
