"""PSNR/SSIM against network calls: the decomposed sampler (dds) versus the ancestral default and the paper's run.

Issue 10's questions: with at most 30 network calls, is the decomposed diffusion sampler (Chung et al.
2024) within 0.3 dB of the best long run; is it never below zero-filled at any N >= 1; how much faster is
the main job than with the issue-6 default (ancestral predictor + Langevin corrector, N=50)? Every run goes
through ``recon.reconstruct`` with the embedded prior (or ``--config/--ckpt``), on centre crops of the
shipped samples (real: Algorithm 2; complex: Algorithm 3; multi-coil: Algorithm 4 on the first ``--coils``
coils) so that the paper's sampler (reverse diffusion + Langevin, ``--long_N``) fits on a CPU.

    python benchmarks/quality_vs_calls.py                                   # default grid, ~15 min on 2 cores
    python benchmarks/quality_vs_calls.py --cases real --dds_N 2 5 --variants --long_N 20 --no_main_job  # smoke

Writes ``benchmarks/results/quality_vs_calls.{json,md,png}`` (``--out``), rewritten after every run.
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
from score_mri.cli.flags import DEFAULT_CKPT, DEFAULT_CONFIG, load_config  # noqa: E402
from score_mri.metrics import psnr, ssim  # noqa: E402
from score_mri.physics.operators import MultiCoilCartesian, SingleCoilCartesian  # noqa: E402
from score_mri.recon import load_model, reconstruct, simulate_mask  # noqa: E402

CASES = {  # name -> (sample file, sampler, crop)
    "real": ("samples/real/retrospective/002.npy", "real", 128),
    "complex": ("samples/single-coil/001.npy", "complex", 128),
    "multicoil": ("samples/multi-coil/001.npy", "ssos", 96),
}
OLD_DEFAULT = {"predictor": "ancestral_sampling", "corrector": "langevin", "N": 50}  # issue 6's default
PAPER = {"predictor": "reverse_diffusion", "corrector": "langevin"}
SEED_001 = 42  # the embedded config's seed: the main job's mask and noise


def crop(x: np.ndarray, size: int) -> np.ndarray:
    """Centre crop of the last two axes to size x size."""
    H, W = x.shape[-2:]
    top, left = (H - size) // 2, (W - size) // 2
    return x[..., top:top + size, left:left + size]


def make_case(name: str, coils: int) -> dict:
    """Label, operator, measured k-space and zero-filled image of one case (gaussian1d x4 mask, seed 0)."""
    path, sampler, size = CASES[name]
    x = crop(np.load(REPO / path), size)
    if sampler == "ssos":
        img = torch.from_numpy(x[:coils].astype(np.complex64))[None]               # [1, C, H, W]
        op = MultiCoilCartesian(simulate_mask((1, 1, size, size), "gaussian1d", 4, 0.08, seed=0))
        label = torch.sqrt(torch.sum(img.abs() ** 2, dim=1))[0].numpy()
        y = op.A(img)
        zf = torch.sqrt(torch.sum(op.A_H(y).abs() ** 2, dim=1))[0].numpy()
    else:
        img = torch.from_numpy(x.astype(np.complex64 if sampler == "complex" else np.float32))[None, None]
        op = SingleCoilCartesian(simulate_mask((1, 1, size, size), "gaussian1d", 4, 0.08, seed=0))
        label = np.abs(x).astype(np.float32)
        y = op.A(img.to(torch.complex64))
        zf_c = op.zero_filled(y)[0, 0]
        zf = (zf_c.abs() if sampler == "complex" else zf_c.real).numpy()
    return {"sampler": sampler, "op": op, "y": y, "label": label, "zf": zf}


def run_one(model, config, case: dict, seed: int, **overrides) -> dict:
    """One reconstruction through ``recon.reconstruct``: PSNR/SSIM, network calls, seconds."""
    settings = sampling.SamplerSettings(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                                        snr=config.sampling.snr, **overrides)
    out = reconstruct(model, case["sampler"], case["op"], case["y"], settings,
                      generator=torch.Generator().manual_seed(seed))
    rec = np.abs(out.image)
    return {**overrides, "seed": seed, "calls": out.network_calls, "seconds": round(out.seconds, 2),
            "psnr": float(psnr(case["label"], rec)), "ssim": float(ssim(case["label"], rec))}


def label_of(r: dict) -> str:
    """A row's mode, e.g. 'dds eta=0 ve' or 'ancestral_sampling+langevin'."""
    if r["predictor"] == "dds":
        mode = f"dds eta={r.get('eta', 0.0):g} {r.get('grid', 've')}"
        return mode + (f" t0={r['t0']}" if r.get("t0") else "") + ("" if r["corrector"] == "none" else "+langevin")
    return f"{r['predictor']}+{r['corrector']}"


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread over seeds for each (case, mode, N)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["case"], label_of(r), r["N"]), []).append(r)
    out = []
    for (case, mode, N), rs in groups.items():
        p = np.array([r["psnr"] for r in rs])
        out.append({"case": case, "mode": mode, "N": N, "calls": rs[0]["calls"], "seeds": len(rs),
                    "psnr": float(p.mean()), "psnr_std": float(p.std()), "psnr_min": float(p.min()),
                    "ssim": float(np.mean([r["ssim"] for r in rs])),
                    "seconds": float(np.mean([r["seconds"] for r in rs]))})
    return out


def markdown(summary: list[dict], zf: dict, main_job: dict | None) -> str:
    """Table per case with the gap to the best run of more than 30 calls; the main-job timing below."""
    lines = ["| case | mode | N | network calls | PSNR (dB) | min over seeds | SSIM | s / recon | gap to best long run (dB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in dict.fromkeys(s["case"] for s in summary):
        rows = [s for s in summary if s["case"] == case]
        long = [s for s in rows if s["calls"] > 30] or rows
        ref = max(long, key=lambda s: s["psnr"])
        lines.append(f"| {case} | zero-filled | - | 0 | {zf[case]['psnr']:.2f} | - | {zf[case]['ssim']:.3f} | - | - |")
        for s in sorted(rows, key=lambda s: (s["mode"] != "dds eta=0 ve", s["mode"], s["calls"])):
            lines.append(f"| {case} | {s['mode']} | {s['N']} | {s['calls']} | {s['psnr']:.2f} ± {s['psnr_std']:.2f} | "
                         f"{s['psnr_min']:.2f} | {s['ssim']:.3f} | {s['seconds']:.1f} | {s['psnr'] - ref['psnr']:+.2f} |")
    if main_job:
        lines += ["", "Main job (sample 001, 320x320, Algorithm 2, same process, sampling only):", "",
                  "| setting | network calls | PSNR (dB) | seconds | ratio to the old default |", "|---|---|---|---|---|"]
        base = main_job["old_default"]["seconds"]
        for k, v in main_job.items():
            lines.append(f"| {k}: {v['mode']} N={v['N']} | {v['calls']} | {v['psnr']:.2f} | {v['seconds']:.1f} | "
                         f"{v['seconds'] / base:.2f} |")
    return "\n".join(lines)


def plot(summary: list[dict], zf: dict, path: Path) -> None:
    """PSNR against network calls (log x), one panel per case, one line per mode."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cases = list(dict.fromkeys(s["case"] for s in summary))
    fig, axes = plt.subplots(1, len(cases), figsize=(4.4 * len(cases), 3.5), squeeze=False)
    for ax, case in zip(axes[0], cases):
        rows = [s for s in summary if s["case"] == case]
        for mode in dict.fromkeys(s["mode"] for s in rows):
            rs = sorted((s for s in rows if s["mode"] == mode), key=lambda s: s["calls"])
            ax.errorbar([s["calls"] for s in rs], [s["psnr"] for s in rs], [s["psnr_std"] for s in rs],
                        marker="o", ms=4, capsize=2, label=mode, ls="-" if len(rs) > 1 else "none")
        ax.axhline(zf[case]["psnr"], color="gray", ls=":", label="zero-filled")
        ax.axvline(30, color="k", lw=0.5, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("network calls")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(case)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_job(model, config, new: dict) -> dict:
    """The main job's reconstruction (sample 001, gaussian1d x4, the CLI's seed 42) with the new and the old
    default, same process (sampling time only: the CLI adds model loading and result writing)."""
    case = {"sampler": "real"}
    x = np.load(REPO / "samples/real/retrospective/001.npy").astype(np.float32)
    case["op"] = SingleCoilCartesian(simulate_mask((1, 1, *x.shape), "gaussian1d", 4, 0.08, seed=SEED_001))
    case["y"] = case["op"].A(torch.from_numpy(x)[None, None].to(torch.complex64))
    case["label"] = x
    out = {}
    for key, kw in (("new_default", new), ("old_default", OLD_DEFAULT)):
        r = run_one(model, config, case, SEED_001, **kw)
        out[key] = {"mode": label_of(r), "N": r["N"], "calls": r["calls"], "psnr": r["psnr"], "seconds": r["seconds"]}
        print(f"main job {key}: {out[key]}", flush=True)
    return out


def main() -> None:
    """Run the grid, print the table, write JSON/markdown/PNG."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="real,complex,multicoil")
    p.add_argument("--dds_N", nargs="*", type=int, default=[1, 2, 3, 5, 10, 20, 30, 50])
    p.add_argument("--variants", nargs="*", default=["eta=0.5", "grid=edm", "t0=0.7", "t0=0.7,N=30"],
                   help="extra dds runs at N=20 (key=value[,key=value]: eta, grid, t0, N, corrector)")
    p.add_argument("--long_N", type=int, default=400, help="N of the paper's sampler (real; complex and multi-coil: "
                                                            "--long_N_complex, --long_N_multicoil)")
    p.add_argument("--long_N_complex", type=int, default=200)
    p.add_argument("--long_N_multicoil", type=int, default=150)
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    p.add_argument("--long_seeds", nargs="*", type=int, default=[0])
    p.add_argument("--coils", type=int, default=4)
    p.add_argument("--no_main_job", action="store_true", help="skip the main-job timing (sample 001, 320x320)")
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
    new = {"predictor": "dds", "corrector": "none", "N": 20, "eta": 0.0, "grid": "ve"}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": a.config, "ckpt": a.ckpt, "coils": a.coils, "threads": torch.get_num_threads(),
            "cases": {k: {"file": CASES[k][0], "sampler": CASES[k][1], "crop": CASES[k][2]} for k in CASES},
            "mask": "gaussian1d x4, centre fraction 0.08, seed 0", "started": time.strftime("%Y-%m-%d %H:%M")}
    rows, zf, main = [], {}, None

    def write() -> None:
        summary = summarise(rows)
        md = markdown(summary, zf, main)
        (out / "quality_vs_calls.json").write_text(json.dumps({"meta": meta, "zero_filled": zf, "summary": summary,
                                                               "main_job": main, "runs": rows}, indent=1))
        (out / "quality_vs_calls.md").write_text(md + "\n")
        if summary:
            plot(summary, zf, out / "quality_vs_calls.png")

    for k, name in enumerate(a.cases.split(",")):
        if k == 1 and not a.no_main_job:  # after the first case, so a cut-short run still has both
            main = main_job(model, config, new)
            write()
        case = make_case(name, a.coils)
        zf[name] = {"psnr": float(psnr(case["label"], case["zf"])), "ssim": float(ssim(case["label"], case["zf"]))}
        long_N = {"real": a.long_N, "complex": a.long_N_complex, "multicoil": a.long_N_multicoil}[name]
        grid = [(dict(new, N=N), a.seeds) for N in a.dds_N]
        for v in a.variants:
            kw = dict(new)
            for item in v.split(","):
                key, value = item.split("=")
                kw[key] = value if key in ("grid", "corrector") else (int(value) if key == "N" else float(value))
            grid.append((kw, a.seeds))
        grid += [(OLD_DEFAULT, a.seeds), (dict(PAPER, N=long_N), a.long_seeds)]
        for kw, seeds in grid:
            for seed in seeds:
                r = {"case": name, **run_one(model, config, case, seed, **kw)}
                rows.append(r)
                print(f"{name:9s} {label_of(r):28s} N={r['N']:4d} seed={seed} calls={r['calls']:5d} "
                      f"PSNR {r['psnr']:.2f} (ZF {zf[name]['psnr']:.2f}) {r['seconds']:.1f}s", flush=True)
                write()
    if main is None and not a.no_main_job:
        main = main_job(model, config, new)
        write()
    print(markdown(summarise(rows), zf, main))


if __name__ == "__main__":
    main()
