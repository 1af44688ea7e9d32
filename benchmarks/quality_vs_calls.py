"""PSNR/SSIM against network calls: the few-step mode (start at t0 < 1) versus long runs from pure noise.

Issue 6's question: does the fast mode reach the long run's quality (within 0.3 dB) with at most 100
network calls? Runs the embedded prior (or ``--config/--ckpt``) on centre crops of the shipped samples
(real: Algorithm 2; complex: Algorithm 3; multi-coil: Algorithm 4 with the first ``--coils`` coils) at a
reduced size, so that a long run (``--full_N``, from t = 1) fits on a CPU, and averages over seeds.

    python benchmarks/quality_vs_calls.py                       # default grid, ~15 min on 2 CPU cores
    python benchmarks/quality_vs_calls.py --cases real --fast 0.5:10 --full_N 20 --seeds 0   # smoke run

Writes ``benchmarks/results/quality_vs_calls.{json,md,png}`` (``--out`` to change) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sampling  # noqa: E402
import sde_lib  # noqa: E402
import utils  # noqa: E402
from cli import DEFAULT_CKPT, DEFAULT_CONFIG, load_config  # noqa: E402
from recon import load_model  # noqa: E402
from metrics import psnr, ssim  # noqa: E402

CASES = {  # name -> (sample file, algorithm, crop)
    "real": ("samples/real/retrospective/002.npy", "alg2", 128),
    "complex": ("samples/single-coil/001.npy", "alg3", 128),
    "multicoil": ("samples/multi-coil/001.npy", "alg4", 96),
}


def crop(x: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of the last two axes to size x size."""
    H, W = x.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    return x[..., top:top + size, left:left + size]


def make_case(name: str, coils: int, seed: int = 0) -> dict:
    """Ground truth, mask, measured k-space and zero-filled input of one benchmark case."""
    path, alg, size = CASES[name]
    x = crop(np.load(REPO / path), size)
    if alg == "alg4":
        x = x[:coils]
        img = torch.from_numpy(x.astype(np.complex64))[None]                    # [1, C, H, W]
        label = utils.root_sum_of_squares(img, dim=1)[0].numpy()
        fft, ifft = utils.fft2_m, utils.ifft2_m
    else:
        dtype = np.float32 if alg == "alg2" else np.complex64
        img = torch.from_numpy(x.astype(dtype))[None, None]                      # [1, 1, H, W]
        label = np.abs(x).astype(np.float32)
        fft, ifft = utils.fft2, utils.ifft2
    mask = utils.get_mask(torch.zeros(1, 1, size, size), size, 1, type="gaussian1d", acc_factor=4,
                          center_fraction=0.08, seed=seed)
    mask = torch.as_tensor(mask).float()                                          # [1, 1, H, W]
    Fy = fft(img) * mask
    zf = ifft(Fy)
    if alg == "alg2":
        zf = zf.real
    return {"alg": alg, "label": label, "mask": mask, "Fy": Fy, "zf": zf}


def magnitude(x: torch.Tensor, alg: str) -> np.ndarray:
    """Magnitude image of a sampler output (RSS over coils for Algorithm 4)."""
    if alg == "alg4":
        return utils.root_sum_of_squares(x, dim=1)[0].abs().numpy()
    return x[0, 0].abs().numpy() if torch.is_complex(x) else x[0, 0].numpy()


def run_one(model, config, case: dict, N: int, t0: float | None, seed: int, snr: float,
            predictor: str, corrector: str) -> dict:
    """One reconstruction; returns PSNR/SSIM, network calls and seconds."""
    sde = sde_lib.VESDE(config.model.sigma_min, config.model.sigma_max, N=N)
    kw = dict(continuous=True, generator=torch.Generator().manual_seed(seed), t0=t0)
    calls = [0]
    hook = model.register_forward_pre_hook(lambda m, a: calls.__setitem__(0, calls[0] + 1))
    try:
        t = time.perf_counter()
        with torch.inference_mode():
            if case["alg"] == "alg4":
                fn = sampling.get_pc_fouriercs_RI_PI_SSOS(sde, predictor, corrector, lambda x: x, snr,
                                                          mask=case["mask"], **kw)
                out = fn(model, case["zf"], case["Fy"])
            else:
                build = sampling.get_pc_fouriercs_fast if case["alg"] == "alg2" else sampling.get_pc_fouriercs_RI
                fn = build(sde, predictor, corrector, lambda x: x, snr, **kw)
                out = fn(model, case["zf"], case["mask"], case["Fy"])
        secs = time.perf_counter() - t
    finally:
        hook.remove()
    rec = magnitude(out, case["alg"])
    return {"N": N, "t0": t0, "seed": seed, "predictor": predictor, "corrector": corrector, "calls": calls[0], "seconds": round(secs, 2),
            "psnr": float(psnr(case["label"], rec)), "ssim": float(ssim(case["label"], rec))}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds for each (case, N, t0)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], r["predictor"], r["N"], r["t0"]), []).append(r)
    out = []
    for (case, predictor, N, t0), rs in groups.items():
        p = np.array([r["psnr"] for r in rs])
        out.append({"case": case, "predictor": predictor, "N": N, "t0": t0, "calls": rs[0]["calls"], "seeds": len(rs),
                    "psnr": float(p.mean()), "psnr_std": float(p.std()),
                    "ssim": float(np.mean([r["ssim"] for r in rs])),
                    "seconds": float(np.mean([r["seconds"] for r in rs]))})
    return out


def markdown(summary: list[dict], zf: dict) -> str:
    """Table per case: mode, N, calls, PSNR (mean ± std over seeds), SSIM, seconds; gap to the longest run."""
    lines = ["| case | mode | N | network calls | PSNR (dB) | SSIM | s / recon | gap to longest run (dB) |",
             "|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(s["case"] for s in summary):
        rows = [s for s in summary if s["case"] == case]
        ref = max(rows, key=lambda s: s["calls"])  # the longest run
        lines.append(f"| {case} | zero-filled | - | 0 | {zf[case]['psnr']:.2f} | {zf[case]['ssim']:.3f} | - | - |")
        for s in sorted(rows, key=lambda s: s["calls"]):
            mode = (f"{s['predictor']}, " + ("from noise (t=1)" if s["t0"] is None else f"fast, t0={s['t0']}"))
            gap = f"{s['psnr'] - ref['psnr']:+.2f}"
            lines.append(f"| {case} | {mode} | {s['N']} | {s['calls']} | {s['psnr']:.2f} ± {s['psnr_std']:.2f} | "
                         f"{s['ssim']:.3f} | {s['seconds']:.1f} | {gap} |")
    return "\n".join(lines)


def plot(summary: list[dict], zf: dict, path: Path) -> None:
    """PSNR against network calls (log x), one panel per case."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys(s["case"] for s in summary))
    fig, axes = plt.subplots(1, len(cases), figsize=(4.2 * len(cases), 3.4), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rows = [s for s in summary if s["case"] == case]
        for pred, t0 in dict.fromkeys((s["predictor"], s["t0"]) for s in rows):
            rs = sorted((s for s in rows if s["t0"] == t0 and s["predictor"] == pred), key=lambda s: s["calls"])
            label = f"{pred}, " + ("from noise (t=1)" if t0 is None else f"t0={t0}")
            ax.errorbar([s["calls"] for s in rs], [s["psnr"] for s in rs], [s["psnr_std"] for s in rs],
                        marker="o", ms=4, capsize=2, label=label)
        ax.axhline(zf[case]["psnr"], color="gray", ls=":", label="zero-filled")
        ax.axvline(100, color="k", lw=0.5, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("network calls")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(case)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    """Run the grid, print the table, write JSON/markdown/PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="real,complex,multicoil")
    p.add_argument("--fast", nargs="*", default=["1.0:25", "0.5:50", "0.7:50", "1.0:50"],
                   help="few-step settings T0:N with the --fast_predictor (t0 1.0: from pure noise)")
    p.add_argument("--fast_predictor", default="ancestral_sampling")
    p.add_argument("--full_N", nargs="*", type=int, default=[100, 500],
                   help="step counts of the long runs from pure noise (t = 1) with the --full_predictor")
    p.add_argument("--full_N_multicoil", nargs="*", type=int, default=[50, 150])
    p.add_argument("--full_predictor", default="reverse_diffusion", help="the original's predictor")
    p.add_argument("--corrector", default="langevin")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1], help="seeds of the few-step runs")
    p.add_argument("--full_seeds", nargs="*", type=int, default=[0], help="seeds of the long runs")
    p.add_argument("--coils", type=int, default=4)
    p.add_argument("--snr", type=float, default=0.16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not Path(a.ckpt).is_file():
        sys.exit(f"error: no weights at {a.ckpt}")
    config = load_config(a.config)
    model = load_model(config, a.ckpt, "cpu")
    fast = [(float(s.split(":")[0]), int(s.split(":")[1])) for s in a.fast]
    rows, zf = [], {}
    for name in a.cases.split(","):
        case = make_case(name, a.coils)
        zf_img = magnitude(case["zf"], case["alg"])
        zf[name] = {"psnr": float(psnr(case["label"], zf_img)), "ssim": float(ssim(case["label"], zf_img))}
        full = a.full_N_multicoil if case["alg"] == "alg4" else a.full_N
        settings = ([(a.fast_predictor, None if t0 >= 1 else t0, N, a.seeds) for t0, N in fast]
                    + [(a.full_predictor, None, N, a.full_seeds) for N in full])
        for predictor, t0, N, seeds in settings:
            for seed in seeds:
                r = run_one(model, config, case, N, t0, seed, a.snr, predictor, a.corrector)
                r["case"] = name
                rows.append(r)
                print(f"{name:9s} {predictor:18s} t0={t0!s:5s} N={N:4d} seed={seed} calls={r['calls']:5d} "
                      f"PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} {r['seconds']:.1f}s", flush=True)
    summary = summarise(rows)
    md = markdown(summary, zf)
    print(md)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": a.config, "ckpt": a.ckpt, "snr": a.snr, "corrector": a.corrector, "coils": a.coils, "threads": torch.get_num_threads(),
            "cases": {k: {"file": CASES[k][0], "algorithm": CASES[k][1], "crop": CASES[k][2]} for k in zf},
            "mask": "gaussian1d x4, centre fraction 0.08, seed 0"}
    (out / "quality_vs_calls.json").write_text(json.dumps({"meta": meta, "zero_filled": zf, "summary": summary,
                                                           "runs": rows}, indent=1))
    (out / "quality_vs_calls.md").write_text(md + "\n")
    plot(summary, zf, out / "quality_vs_calls.png")


if __name__ == "__main__":
    main()
