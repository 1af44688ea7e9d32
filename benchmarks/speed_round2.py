"""Speed, round two: the main job and the SENSE sampler, fp32 against bf16 and the old against the new FFT path.

Every comparison runs its variants side by side in one run (interleaved: A, B, A, B, ...), ``--repeats`` times,
and reports medians and ratios, so a shared, loaded machine still gives usable ratios (absolute seconds are only
meaningful on an idle one: the ``load 1m`` column says how loaded it was).

Cases:
  main_job      ``python inference_real.py --task retrospective --data 001`` as a subprocess: wall time,
                the sampling seconds of its metrics JSON, start-up (wall - sampling) and PSNR; --precision fp32
                against bf16.
  sense_8x256   SENSE sampler (the embedded config's settings) on ``samples/real/retrospective/001`` resized to
                256x256 with 8 sigpy birdcage coils (uniform1d x4 mask, seed 0), in this process.
  sense_15x320  the same image at 320x320 with 15 birdcage coils.
  sense_sample  ``inference_multi-coil_SENSE.py --data 001 --mask_type uniform1d --acc_factor 8`` (the shipped
                8-coil sample), fp32 against bf16: the multi-coil quality check of bf16.
  sense_dc_15x320  the data consistency of one sense_15x320 reconstruction alone (20 CG solves of 5
                iterations), fft_shift against the new operator path: the operator's own speed-up.
  espirit       sigpy ESPIRiT maps (the scripts' default, calibration width 24) for the two SENSE sizes: the
                per-slice cost the SENSE command adds to the sampling (the SENSE cases use the birdcage maps).
SENSE variants: ``fft_shift`` (the centered FFT by shift copies, as before), ``fp32`` (sign-modulated centered
FFT, fp32 network), ``bf16`` (sign-modulated FFT, bf16 autocast of the network calls).

  python benchmarks/speed_round2.py                    # all cases, 3 repeats (about 10 min on 2 idle cores)
  python benchmarks/speed_round2.py --repeats 1 --cases sense_8x256 --keep   # rerun one case, keep the others' rows
  python benchmarks/speed_round2.py --quick --out /tmp/s  # tiny sizes and N = 2: checks the script only

Writes benchmarks/results/speed_round2.json and .md (``--out`` to change the folder).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

CASES = ("main_job", "sense_8x256", "sense_15x320", "sense_sample", "sense_dc_15x320", "espirit")
SENSE_CASES = {"sense_8x256": (8, 256), "sense_15x320": (15, 320), "sense_dc_15x320": (15, 320)}
QUICK_SENSE = {"sense_8x256": (4, 32), "sense_15x320": (5, 40), "sense_dc_15x320": (5, 40)}
SENSE_VARIANTS = ("fft_shift", "fp32", "bf16")
TARGETS_S = {"main_job": 8.0, "sense_8x256": 20.0, "sense_15x320": 30.0}


def _median(values: list[float]) -> float | None:
    """Median of the finite values, None when there are none."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    import resource
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def interleaved(variants: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[dict]]:
    """Run every variant once per round, in turn, for ``repeats`` rounds; each call returns a record."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            load = common.loadavg()
            cpu0, tic = _cpu_s(), time.perf_counter()
            rec = fn()
            rec.setdefault("wall_s", time.perf_counter() - tic)
            rec["cpu_s"] = _cpu_s() - cpu0
            rec["load_1m"] = load[0] if load else None
            runs[name].append(rec)
    return runs


# ----------------------------------------------------------------------------------------------------------
# Subprocess cases: the main job and the shipped multi-coil sample
# ----------------------------------------------------------------------------------------------------------

def _cli_run(script: str, args: list[str], precision: str, threads: int | None, save_dir: Path) -> dict:
    """One command-line reconstruction in a fresh process: wall time and its metrics JSON."""
    cmd = [sys.executable, str(common.REPO / script), *args, "--precision", precision, "--save_dir", str(save_dir),
           "--overwrite", "--quiet"]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env.pop("CI", None)
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(common.REPO), env=env)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    metrics = sorted(save_dir.rglob("*_metrics.json"), key=lambda p: p.stat().st_mtime)[-1]
    rec = json.loads(metrics.read_text())
    sampling = float(rec["seconds"])
    return {"wall_s": wall, "sampling_s": sampling, "startup_s": wall - sampling,
            "psnr": (rec.get("recon") or {}).get("psnr"), "ssim": (rec.get("recon") or {}).get("ssim"),
            "precision": rec.get("precision"), "network_calls": rec.get("network_calls")}


def cli_case(case: str, repeats: int, threads: int | None, quick: bool, tmp: Path) -> list[dict]:
    """fp32 against bf16 for one command-line case; one row per variant."""
    if case == "main_job":
        script, args = "inference_real.py", ["--task", "retrospective", "--data", "001"]
    else:
        script, args = "inference_multi-coil_SENSE.py", ["--data", "001", "--mask_type", "uniform1d",
                                                         "--acc_factor", "8"]
    if quick:
        args += ["--N", "2"]
    variants = {p: (lambda p=p: _cli_run(script, args, p, threads, tmp / f"{case}_{p}")) for p in ("fp32", "bf16")}
    runs = interleaved(variants, repeats)
    return _rows(case, runs, "fp32")


# ----------------------------------------------------------------------------------------------------------
# In-process SENSE cases
# ----------------------------------------------------------------------------------------------------------

def sense_problem(coils: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image [1, 1, H, W] complex, maps [1, C, H, W] with sum |S|^2 = 1, mask [1, 1, H, W]): sample 001 resized."""
    import sigpy.mri

    from score_mri import recon
    img = np.abs(np.load(common.REPO / "samples" / "real" / "retrospective" / "001.npy")).astype(np.float32)
    x = torch.from_numpy(img)[None, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x / x.abs().max()).to(torch.complex64)
    maps = torch.from_numpy(sigpy.mri.birdcage_maps((coils, size, size), r=1.5, nzz=coils)).to(torch.complex64)
    maps = maps / torch.sqrt(torch.sum(torch.abs(maps) ** 2, dim=0, keepdim=True))
    mask = recon.simulate_mask((1, 1, size, size), "uniform1d", 4, 0.08, 0)
    return x, maps[None], mask


def sense_case(case: str, model, config, repeats: int, quick: bool) -> list[dict]:
    """The SENSE sampler in this process: old FFT path, new FFT path, new path with bf16 network calls."""
    from score_mri import metrics, recon
    from score_mri import samplers as sampling
    from score_mri.physics import fft
    from score_mri.physics.operators import SENSE

    coils, size = (QUICK_SENSE if quick else SENSE_CASES)[case]
    x, maps, mask = sense_problem(coils, size)
    op = SENSE(maps, mask)
    y = op.A(x)
    settings = sampling.SamplerSettings.from_config(config, **({"N": 2} if quick else {}))
    gt = np.abs(x[0, 0].numpy())

    def variant(sign: bool, precision: str) -> Callable[[], dict]:
        def run() -> dict:
            fft.SIGN_MODULATION = sign
            model.inference_precision = precision
            try:
                out = recon.reconstruct(model, "sense", op, y, settings, generator=torch.Generator().manual_seed(0))
            finally:
                fft.SIGN_MODULATION, model.inference_precision = True, "fp32"
            return {"sampling_s": out.seconds, "psnr": metrics.psnr(gt, np.abs(out.image)),
                    "ssim": metrics.ssim(gt, np.abs(out.image)), "precision": precision,
                    "network_calls": out.network_calls}
        return run

    variants = {"fft_shift": variant(False, "fp32"), "fp32": variant(True, "fp32"), "bf16": variant(True, "bf16")}
    if case.startswith("sense_dc"):
        variants = {"fft_shift": dc_variant(op, y, x, settings, False), "fp32": dc_variant(op, y, x, settings, True)}
    runs = interleaved(variants, repeats)
    rows = _rows(case, runs, "fft_shift")
    for row in rows:
        row["size"] = f"{coils} coils {size}x{size}"
    return rows


def espirit_case(repeats: int, quick: bool) -> list[dict]:
    """Seconds of the scripts' ESPIRiT calibration for each SENSE size (one variant)."""
    from score_mri.physics.operators import MultiCoilCartesian
    from score_mri.physics.sens_maps import espirit

    rows = []
    for case in ("sense_8x256", "sense_15x320"):
        coils, size = (QUICK_SENSE if quick else SENSE_CASES)[case]
        x, maps, mask = sense_problem(coils, size)
        ksp = MultiCoilCartesian(mask).A(maps * x)[0].numpy()

        def run() -> dict:
            tic = time.perf_counter()
            espirit(ksp, min(24, size // 2))
            return {"sampling_s": time.perf_counter() - tic, "precision": None, "network_calls": 0}
        for row in _rows("espirit", interleaved({"espirit": run}, repeats), "espirit"):
            row["size"] = f"{coils} coils {size}x{size}"
            rows.append(row)
    return rows


def dc_variant(op, y: torch.Tensor, x: torch.Tensor, settings, sign: bool) -> Callable[[], dict]:
    """N CG solves of the SENSE data consistency (the sampler's per-step cost besides the network)."""
    from score_mri.physics import fft

    x_hat = (x + 0.05 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(0)))

    def run() -> dict:
        fft.SIGN_MODULATION = sign
        try:
            tic = time.perf_counter()
            for _ in range(settings.N):
                out = op.solve(x_hat, y, settings.gamma, settings.cg_iters)
            seconds = time.perf_counter() - tic
        finally:
            fft.SIGN_MODULATION = True
        err = float((out - x).abs().pow(2).mean())
        return {"sampling_s": seconds, "psnr": 10 * float(np.log10(float(x.abs().max()) ** 2 / err)),
                "precision": "fp32", "network_calls": 0}
    return run


# ----------------------------------------------------------------------------------------------------------
# Rows, table
# ----------------------------------------------------------------------------------------------------------

def _rows(case: str, runs: dict[str, list[dict]], baseline: str) -> list[dict]:
    """One row per variant: medians, the ratio to ``baseline`` (sampling and wall) and the quality."""
    base_sampling = _median([r["sampling_s"] for r in runs[baseline]])
    base_wall = _median([r["wall_s"] for r in runs[baseline]])
    base_psnr = _median([r.get("psnr") for r in runs[baseline]])
    base_cpu = _median([r.get("cpu_s") for r in runs[baseline]])
    rows = []
    for name, recs in runs.items():
        sampling_s, wall_s = _median([r["sampling_s"] for r in recs]), _median([r["wall_s"] for r in recs])
        psnr, cpu_s = _median([r.get("psnr") for r in recs]), _median([r.get("cpu_s") for r in recs])
        rows.append({
            "case": case, "variant": name, "repeats": len(recs), "wall_s": wall_s, "sampling_s": sampling_s,
            "startup_s": _median([r.get("startup_s") for r in recs]),
            "speedup_sampling": base_sampling / sampling_s if sampling_s else None,
            "speedup_wall": base_wall / wall_s if wall_s else None,
            "cpu_s": cpu_s, "speedup_cpu": base_cpu / cpu_s if base_cpu and cpu_s else None,
            "psnr": psnr, "dpsnr": psnr - base_psnr if psnr is not None and base_psnr is not None else None,
            "ssim": _median([r.get("ssim") for r in recs]), "network_calls": recs[0].get("network_calls"),
            "load_1m": _median([r.get("load_1m") for r in recs]), "target_s": TARGETS_S.get(case), "runs": recs})
    return rows


COLUMNS = [("case", "case"), ("variant", "variant"), ("size", "size"), ("threads", "threads"), ("repeats", "n"),
           ("wall_s", "wall s"),
           ("sampling_s", "sampling s"), ("startup_s", "start-up s"), ("speedup_sampling", "speed-up (sampling)"),
           ("speedup_wall", "speed-up (wall)"), ("cpu_s", "CPU s"), ("speedup_cpu", "speed-up (CPU s)"), ("psnr", "PSNR dB"), ("dpsnr", "dPSNR dB"), ("ssim", "SSIM"),
           ("target_s", "target s"), ("load_1m", "load 1m")]


def render(data: dict) -> str:
    """The markdown report."""
    info = data["machine"]
    lines = ["# Speed, round two", "",
             f"Machine: {info.get('cpu_model')}, {info.get('cpu_count')} CPUs, torch {info.get('torch')}, "
             f"CPU bf16: {data['cpu_bf16']}. Repeats per row: `n` (interleaved; medians). "
             f"{'QUICK run: numbers meaningless. ' if data['quick'] else ''}"
             "Speed-ups are against the first variant of each case, measured side by side in the same run; "
             "absolute seconds hold only when `load 1m` is near 0 (no other work on the machine).", "",
             "Variants: main_job and sense_sample: `--precision fp32` / `bf16` (bf16 autocast of the network call "
             "only). SENSE: `fft_shift` = centered FFT by shift copies (the previous code), `fp32` = sign-modulated "
             "centered FFT (one FFT call over all coils, no copies), `bf16` = that plus bf16 network calls. "
             "`target s` is issue 22's goal (wall for main_job, sampling for SENSE).", "",
             common.markdown_table(data["rows"], COLUMNS), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Parse flags, run the cases, write the JSON and markdown results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, N = 2: checks the script, numbers meaningless")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--keep", action="store_true", help="keep the rows of the cases not run now from the existing JSON")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from score_mri import perf, recon
    from score_mri.config import load_config
    from score_mri.paths import DEFAULT_CKPT, DEFAULT_CONFIG

    config = load_config(DEFAULT_CONFIG)
    data: dict[str, Any] = {"machine": common.machine_info(torch.device("cpu")), "threads": a.threads,
                            "repeats": a.repeats, "quick": a.quick, "cpu_bf16": perf.cpu_has_bf16(), "rows": []}
    out_dir = Path(a.out) if a.out else None
    old = (out_dir or common.RESULTS) / "speed_round2.json"
    if a.keep and old.is_file():
        data["rows"] = [r for r in json.loads(old.read_text())["rows"] if r["case"] not in a.cases]
    model = None
    with tempfile.TemporaryDirectory(prefix="speed_round2_") as tmp:
        for case in a.cases:
            if case == "espirit":
                rows = espirit_case(a.repeats, a.quick)
            elif case in SENSE_CASES:
                if model is None:
                    model = recon.load_model(config, DEFAULT_CKPT, "cpu", "fp32")
                rows = sense_case(case, model, config, a.repeats, a.quick)
            else:
                rows = cli_case(case, a.repeats, a.threads, a.quick, Path(tmp))
            for r in rows:
                r["threads"] = torch.get_num_threads()
            data["rows"].extend(rows)
            data["rows"].sort(key=lambda r: CASES.index(r["case"]))
            common.write_results("speed_round2", data, render(data), out_dir)  # rewritten after every case
            for r in rows:
                print(f"{r['case']:13s} {r['variant']:9s} sampling {r['sampling_s']:.2f} s  wall {r['wall_s']:.2f} s  "
                      f"x{common.fmt(r['speedup_sampling'])}  PSNR {common.fmt(r['psnr'], 4)} dB", flush=True)
    return data


if __name__ == "__main__":
    main()
