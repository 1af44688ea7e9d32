"""Prior quality: compare score-prior checkpoints by held-out denoising loss and by reconstruction quality.

Each checkpoint is given with its config as ``NAME=CONFIG:PATH``; PATH may be an exported weights file
(``weights/<name>.pth``: model + EMA) or a training snapshot (``<workdir>/checkpoints-meta/checkpoint.pth``:
model + EMA + optimizer); the EMA weights are used in both cases. Every checkpoint sees the same images,
the same noise and the same masks:

* held-out denoising score matching loss, mean over pixels of (sigma * s(x + sigma z, sigma) + z)^2, at
  fixed noise levels relative to [0, 1] images (1.0 = a network that outputs zero; lower is better), on
  evaluation-only images: the open ANTsPy T1 slices, the three fastMRI knee magnitudes of the original
  repository (evaluation only) and slices of voxelmorph's ``test_scan.npz``;
* reconstruction PSNR / SSIM at the config's embedded sampling defaults (``recon.reconstruct``):
  Algorithm 2 (real-valued) on every image, the complex sampler on magnitude x smooth seeded random phase,
  and the SENSE sampler on 8 simulated birdcage coils (ESPIRiT maps from the measured centre), all
  retrospective gaussian1d x4; BART ``pics -l1`` and zero-filling are the reference rows, computed once.

    OMP_NUM_THREADS=1 python benchmarks/prior_quality.py \\
        --ckpt shipped=configs/ve/colin27_ncsnpp_small.py:weights/colin27_ncsnpp_small.pth \\
        --ckpt open_mri=configs/ve/open_mri_ncsnpp_small.py:runs/open_mri/checkpoints-meta/checkpoint.pth
    python benchmarks/prior_quality.py --quick ...     # one image per source, one complex and one coil case

Writes ``<out>/prior_quality.json`` and ``<out>/prior_quality.md`` (default out: benchmarks/results).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Every project import of this benchmark goes through this table. Modules moving into the score_mri package:
# the package path first, the old top-level name as the fallback. ``utils`` and ``sde_lib`` stay import names
# (``utils`` gathers the helpers, masks and scalers included, wherever they live in the package).
_MODULES: dict[str, tuple[str, ...]] = {
    "recon": ("score_mri.recon", "recon"),
    "sampling": ("score_mri.samplers", "sampling"),
    "metrics": ("score_mri.metrics", "metrics"),
    "flags": ("score_mri.cli.flags", "cli"),
    "operators": ("score_mri.physics.operators", "operators"),
    "sens_maps": ("score_mri.physics.sens_maps", "sens_maps"),
    "phase": ("score_mri.physics.phase",),
    "perf": ("score_mri.perf", "perf"),
    "sde": ("sde_lib", "score_mri.sde"),
    "utils": ("utils", "score_mri.utils"),
    "mutils": ("score_mri.models.utils", "models.utils"),
    "checkpoint": ("score_mri.models.checkpoint", "models.checkpoint"),
    "ema": ("score_mri.models.ema", "models.ema"),
    "classical": ("benchmarks.classical",),
    "common": ("benchmarks.common",),
}


def project_module(key: str) -> ModuleType:
    """The module registered under ``key`` in ``_MODULES``: the first candidate that exists."""
    errors = []
    for name in _MODULES[key]:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not (name == e.name or name.startswith(e.name + ".")):
                raise  # the module exists but one of its own imports is missing
            errors.append(name)
    raise ModuleNotFoundError(f"none of {', '.join(errors)} can be imported")


SIGMAS = (0.01, 0.05, 0.2, 1.0, 5.0)
KINDS = ("real", "complex", "coil8")
SOURCES = ("ants", "knee", "vxm")
MASK_TYPE, ACC, CENTER_FRACTION = "gaussian1d", 4.0, 0.08
N_COILS = 8
COMPLEX_IMAGES = ("ants:r27", "ants:r62")  # the images that also get complex and 8-coil rows
ANTS_SLICES = ("r16", "r27", "r30", "r62", "r64", "r85")
VXM_SLICES = (96, 112, 128)                # vol[:, :, k] of test_scan.npz (160 x 192, padded to 192 x 192)


@dataclass(frozen=True)
class Image:
    """One evaluation image: magnitude in [0, 1] (max 1), square, side divisible by 8."""
    name: str
    source: str
    x: np.ndarray  # [H, W] float32


@dataclass(frozen=True)
class Prior:
    """One checkpoint to compare: its name, config file, weights/snapshot path, inference precision and the
    complex mode of its complex / coil runs (None: the config's)."""
    name: str
    config: Path
    path: Path
    precision: str = "fp32"
    complex_mode: str | None = None


# ----------------------------------------------------------------------------- data
def default_data_root() -> Path:
    """``$SCORE_MRI_SHARED/data`` when set, else ``<repo>/../shared/data``."""
    env = os.environ.get("SCORE_MRI_SHARED")
    return (Path(env) if env else REPO.parent / "shared") / "data"


def _square(x: np.ndarray, size: int | None = None) -> np.ndarray:
    """Centre crop or zero-pad to ``size`` x ``size`` (default: the larger side rounded up to a multiple of 8)."""
    H, W = x.shape
    size = size or -(-max(H, W) // 8) * 8
    out = np.zeros((size, size), np.float32)
    h, w = min(H, size), min(W, size)
    out[(size - h) // 2:(size - h) // 2 + h, (size - w) // 2:(size - w) // 2 + w] = \
        x[(H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w]
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    """Clip below 0 and scale to max 1 (float32)."""
    x = np.clip(np.asarray(x, np.float64), 0, None)
    return (x / x.max()).astype(np.float32)


def load_images(root: Path, sources: list[str], per_source: int | None, size: int | None) -> list[Image]:
    """The evaluation images of ``sources`` (at most ``per_source`` each), squared and scaled to max 1."""
    images: list[Image] = []
    if "ants" in sources:
        from skimage.io import imread
        for s in ANTS_SLICES[:per_source]:
            img = imread(root / "ANTsPy" / "data" / f"{s}slice.jpg", as_gray=True)
            images.append(Image(f"ants:{s}", "ants", _unit(_square(_unit(img), size))))
    if "knee" in sources:
        for i in (1, 2, 3)[:per_source]:
            img = np.load(root / "score-MRI" / "samples" / "real" / "retrospective" / f"{i:03d}.npy")
            images.append(Image(f"knee:{i:03d}", "knee", _unit(_square(np.abs(img), size))))
    if "vxm" in sources:
        with np.load(root / "voxelmorph" / "data" / "test_scan.npz") as z:
            vol = z["vol"]                                                          # [160, 192, 224]
        for k in VXM_SLICES[:per_source]:
            images.append(Image(f"vxm:{k}", "vxm", _unit(_square(_unit(vol[:, :, k]), size))))
    return images


# ----------------------------------------------------------------------------- priors
def parse_prior(text: str) -> Prior:
    """``NAME=CONFIG:PATH[@PRECISION][#MODE]`` -> Prior (relative paths against the repository; precision fp32 or
    bf16; MODE a complex mode for the complex and coil cases)."""
    name, sep, rest = text.partition("=")
    config, sep2, path = rest.partition(":")
    path, _, mode = path.partition("#")
    path, _, precision = path.partition("@")
    modes = ("ri", "phase", "phase_ri")
    if (not sep or not sep2 or not name or not config or not path or precision not in ("", "fp32", "bf16")
            or (mode and mode not in modes)):
        raise argparse.ArgumentTypeError(f"expected NAME=CONFIG:PATH[@fp32|@bf16][#{'|#'.join(modes)}], got {text!r}")

    def resolve(p: str) -> Path:
        """An existing or absolute path as given, else relative to the repository."""
        q = Path(p)
        return q if q.is_absolute() or q.exists() else REPO / q

    return Prior(name, resolve(config), resolve(path), precision or "fp32", mode or None)


def _sha256(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_prior(prior: Prior, device: str) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(config, model with the EMA weights, file record) for a weights file or a training snapshot."""
    flags, mutils, ckpt_mod, ema_mod, perf = (project_module(k)
                                              for k in ("flags", "mutils", "checkpoint", "ema", "perf"))
    config = flags.load_config(prior.config)
    model = mutils.create_model(config, device=torch.device(device))
    ema = ema_mod.ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    stat = prior.path.stat()
    try:
        out = ckpt_mod.load_checkpoint(prior.path, model, ema=ema, device=device, copy_ema_to_model=True)
        used_ema = True
    except ckpt_mod.CheckpointError as e:
        if "no EMA state" not in str(e):
            raise
        out = ckpt_mod.load_model_weights(prior.path, model, device=device)  # bare state dict: stored weights
        used_ema = False
    model = perf.prepare_model_for_inference(model, device, precision=prior.precision)
    defaults = project_module("sampling").SamplerSettings.from_config(config)
    record = {"config": _display(prior.config), "path": _display(prior.path), "precision": prior.precision,
              "complex_mode": prior.complex_mode or str(config.sampling.get("complex_mode", "ri")),
              "residual_smoothing": defaults.residual_smoothing, "t0": 1.0 if defaults.t0 is None else defaults.t0,
              "noise_weighting": defaults.noise_weighting, "t0_clean": defaults.t0_clean,
              "flip_cycle": defaults.flip_cycle,
              "step": int(out.get("step", 0)),
              "ema_weights": used_ema, "training_snapshot": out.get("optimizer") is not None,
              "size_MB": round(stat.st_size / 2 ** 20, 1), "mtime_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                      time.gmtime(stat.st_mtime)),
              "sha256_16": _sha256(prior.path),
              "parameters": sum(p.numel() for p in model.parameters())}
    return config, model, record


# ----------------------------------------------------------------------------- denoising loss
def dsm_losses(model: torch.nn.Module, config, images: list[Image], sigmas: tuple[float, ...],
               seed: int) -> list[list[float]]:
    """Held-out DSM loss [image][sigma]: mean over pixels of (sigma s(x + sigma z, sigma) + z)^2, fixed z."""
    sde_mod, mutils, utils = (project_module(k) for k in ("sde", "mutils", "utils"))
    if not bool(config.training.continuous):
        raise ValueError("the denoising loss needs a continuous-time (sigma-conditioned) model")
    smin, smax = float(config.model.sigma_min), float(config.model.sigma_max)
    sde = sde_mod.VESDE(sigma_min=smin, sigma_max=smax, N=int(config.model.num_scales))
    score_fn = mutils.get_score_fn(sde, model, train=False, continuous=True)
    scaler = utils.get_data_scaler(config)
    gain = float(scaler(torch.ones(1)) - scaler(torch.zeros(1)))                  # [0, 1] -> model range
    device = next(model.parameters()).device
    out = []
    for i, im in enumerate(images):
        S = len(sigmas)
        x = scaler(torch.from_numpy(im.x))[None, None].expand(S, 1, *im.x.shape)   # [S, 1, H, W]
        g = torch.Generator().manual_seed(seed * 100003 + i)
        z = torch.randn(x.shape, generator=g)                                      # same noise for every prior
        sig = torch.tensor(sigmas, dtype=torch.float32) * gain                     # [S]
        t = (torch.log(sig / smin) / np.log(smax / smin)).clamp(0.0, 1.0)
        sig_t = sde.marginal_prob(torch.zeros(S), t)[1]                            # = sig inside [smin, smax]
        xt = x + sig_t[:, None, None, None] * z
        with torch.no_grad():
            score = score_fn(xt.to(device), t.to(device)).float().cpu()
        res = (sig_t[:, None, None, None] * score + z) ** 2
        out.append([float(v) for v in res.flatten(1).mean(1)])
    return out


# ----------------------------------------------------------------------------- reconstruction
@dataclass
class Case:
    """One reconstruction problem shared by every method: data kind, image, ground truth, mask and k-space."""
    kind: str                 # 'real' | 'complex' | 'coil8'
    image: Image
    x: np.ndarray             # [H, W] (real or complex) or coil images [C, H, W]
    gt: np.ndarray            # [H, W] magnitude (RSS for coils)
    mask: torch.Tensor        # [1, 1, H, W] float32
    seed: int

    @property
    def mask2d(self) -> np.ndarray:
        """The mask as a [H, W] array."""
        return self.mask[0, 0].numpy()


def make_cases(images: list[Image], kinds: list[str], complex_names: list[str], seed: int,
               coil_noise: float = 0.0) -> list[Case]:
    """Real cases for every image; complex and 8-coil cases for ``complex_names`` (same mask per image).
    ``coil_noise``: standard deviation of complex white noise added to each 8-coil case's coil images (seeded
    per image; the ground truth stays the noise-free root-sum-of-squares), as in a real multi-coil scan."""
    recon, classical, phase = (project_module(k) for k in ("recon", "classical", "phase"))
    cases = []
    for i, im in enumerate(images):
        size = im.x.shape[-1]
        s = seed + i
        for kind in kinds:
            if kind != "real" and im.name not in complex_names:
                continue
            cf = CENTER_FRACTION if kind == "real" else max(CENTER_FRACTION, 14 / size)  # ESPIRiT: >= 12 lines
            mask = recon.simulate_mask((1, 1, size, size), MASK_TYPE, ACC, cf, s)
            if kind == "real":
                x = im.x
            else:
                x = (im.x * np.exp(1j * phase.smooth_phase(im.x.shape, 1000 + s))).astype(np.complex64)
                if kind == "coil8":
                    x = (classical.simulated_sens(N_COILS, im.x.shape) * x[None]).astype(np.complex64)
            gt = classical.root_sum_of_squares(x) if x.ndim == 3 else np.abs(x)
            if kind == "coil8" and coil_noise > 0:
                rng = np.random.default_rng(1_000_003 + s)
                noise = rng.standard_normal((2, *x.shape)) * (coil_noise / np.sqrt(2))
                x = (x + noise[0] + 1j * noise[1]).astype(np.complex64)
            cases.append(Case(kind, im, x, gt.astype(np.float32), mask, s))
    return cases


def _metrics(gt: np.ndarray, img: np.ndarray) -> dict[str, float]:
    """fastMRI PSNR / SSIM on magnitude images."""
    metrics = project_module("metrics")
    mag = np.abs(img).astype(np.float32)
    return {"psnr": round(float(metrics.psnr(gt, mag)), 3), "ssim": round(float(metrics.ssim(gt, mag)), 4)}


def reference_images(case: Case, bart: bool) -> list[tuple[str, np.ndarray, float | None, float]]:
    """(method, image, lambda, seconds) of zero-filled and BART ``pics -l1`` (fixed lambda of
    benchmarks/classical.py) on one case."""
    classical = project_module("classical")
    y = classical.measure(case.x, case.mask2d).astype(np.complex64)                # [C, H, W]
    methods = [("ZF", classical.zero_filled, None)]
    if bart:
        lam = classical.BART_LAMBDA["multi-coil" if case.kind == "coil8" else "single-coil"]
        methods.append(("BART pics-l1", lambda yy: classical.bart_pics(yy, case.mask2d, lamda=lam), lam))
    out = []
    for method, fn, lam in methods:
        tic = time.time()
        img = fn(y)
        out.append((method, img, lam, time.time() - tic))
    return out


def reference_rows(case: Case, bart: bool) -> list[dict[str, Any]]:
    """Zero-filled and BART rows of one case (:func:`reference_images`)."""
    return [{"method": method, "lambda": lam, **_metrics(case.gt, img), "seconds": round(seconds, 2),
             "network_calls": 0} for method, img, lam, seconds in reference_images(case, bart)]


def sampler_settings(config, N: int | None, device: str, coils: bool, **overrides: Any):
    """The config's embedded sampling defaults as the command-line scripts resolve them (optionally --N), with
    the ``overrides`` that are not None (SamplerSettings fields) applied."""
    flags = project_module("flags")
    argv = ["--data", "-", "--device", device] + (["--N", str(N)] if N else [])
    args = flags.build_parser("prior_quality").parse_args(argv)
    settings, _ = flags.resolve(args, config, coils=coils)
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


def prior_reconstruction(case: Case, model: torch.nn.Module, config, N: int | None, device: str,
                         **overrides: Any) -> tuple[Any, Any, float]:
    """(``recon.Reconstruction``, settings, seconds of ESPIRiT) of one score-prior reconstruction of ``case``
    (``overrides``: SamplerSettings fields that replace the config's sampling defaults where not None)."""
    recon, operators, sens_maps, utils = (project_module(k) for k in ("recon", "operators", "sens_maps", "utils"))
    mask = case.mask.to(device)
    xt = torch.from_numpy(np.asarray(case.x, np.complex64))
    xt = (xt[None, None] if xt.ndim == 2 else xt[None]).to(device)                 # [1, C, H, W]
    extra_s = 0.0
    if case.kind == "coil8":
        settings = sampler_settings(config, N, device, coils=True, **overrides)
        size = case.x.shape[-1]
        cart = operators.MultiCoilCartesian(mask.expand(1, N_COILS, size, size))
        y = cart.A(xt)
        tic = time.time()
        sens = torch.from_numpy(sens_maps.espirit(y[0].cpu().numpy(), utils.calib_width(case.mask2d)))[None]
        extra_s = time.time() - tic
        op, sampler = operators.SENSE(sens.to(device), mask), "sense"
    else:
        settings = sampler_settings(config, N, device, coils=False, **overrides)
        op = operators.SingleCoilCartesian(mask)
        y = op.A(xt)
        sampler = "real" if case.kind == "real" else "complex"
    rec = recon.reconstruct(model, sampler, op, y, settings,
                            generator=torch.Generator(device=device).manual_seed(case.seed),
                            inverse_scaler=utils.get_data_inverse_scaler(config))
    return rec, settings, extra_s


def prior_row(case: Case, model: torch.nn.Module, config, N: int | None, device: str,
              **overrides: Any) -> dict[str, Any]:
    """One score-prior reconstruction of ``case`` through ``recon.reconstruct`` (``overrides``: SamplerSettings
    fields that replace the config's sampling defaults where not None, e.g. ``complex_mode`` or ``t0``)."""
    rec, settings, extra_s = prior_reconstruction(case, model, config, N, device, **overrides)
    start = rec.info.get("t0", settings.t0)  # the start the sampler took (SENSE on clean data: t0_clean)
    return {**_metrics(case.gt, rec.image), "seconds": round(rec.seconds + extra_s, 2),
            "network_calls": rec.network_calls, "N": settings.N, "predictor": str(settings.predictor),
            "corrector": str(settings.corrector), "complex_mode": settings.complex_mode,
            "residual_smoothing": settings.residual_smoothing, "nonnegative": settings.nonnegative,
            "flip_cycle": settings.flip_cycle, "t0": 1.0 if start is None else start}


# ----------------------------------------------------------------------------- summaries
def _mean(vals: list[float]) -> float | None:
    """Mean, None for an empty list."""
    return float(np.mean(vals)) if vals else None


def summarize(rows: list[dict[str, Any]], method: str, group: str) -> dict[str, dict[str, Any]]:
    """Mean PSNR / SSIM of ``method`` per value of ``group`` ('kind' or 'source'), with the difference to BART."""
    bart = {(r["kind"], r["image"]): r for r in rows if r["method"] == "BART pics-l1"}
    out = {}
    for key in dict.fromkeys(r[group] for r in rows if r["method"] == method):
        sel = [r for r in rows if r["method"] == method and r[group] == key]
        paired = [(r, bart[r["kind"], r["image"]]) for r in sel if (r["kind"], r["image"]) in bart]
        out[key] = {"images": len(sel), "psnr": _mean([r["psnr"] for r in sel]),
                    "ssim": _mean([r["ssim"] for r in sel]),
                    "dpsnr_bart": _mean([r["psnr"] - b["psnr"] for r, b in paired]),
                    "dssim_bart": _mean([r["ssim"] - b["ssim"] for r, b in paired]),
                    "seconds": _mean([r["seconds"] for r in sel]),
                    "network_calls": _mean([r["network_calls"] for r in sel])}
    return out


def dsm_summary(per_image: dict[str, list[float]], images: list[Image], sigmas: tuple[float, ...],
                source: str | None = None) -> dict[str, float]:
    """Mean DSM loss per sigma over the images (of one source when given)."""
    sel = [per_image[im.name] for im in images if source is None or im.source == source]
    return {f"{s:g}": float(np.mean([v[j] for v in sel])) for j, s in enumerate(sigmas)} if sel else {}


def _fmt(v: float | None, digits: int = 2) -> str:
    """Cell text; '-' for None."""
    return "-" if v is None else f"{v:.{digits}f}"


def _in_effect(record: dict[str, Any], result: dict[str, Any], key: str, default: Any) -> Any:
    """The run's command-line override of ``key`` if given, else the checkpoint config's value."""
    override = result.get("settings", {}).get(key)
    return record.get(key, default) if override is None else override


def _smoothing(record: dict[str, Any], result: dict[str, Any]) -> str:
    """' (residual smoothing S px)' for phase_ri runs that smooth, else ''."""
    s = _in_effect(record, result, "residual_smoothing", 0.0)
    return f" (residual smoothing {s:g} px)" if record.get("complex_mode") == "phase_ri" and s else ""


def _weighting(record: dict[str, Any], result: dict[str, Any]) -> str:
    """', noise-weighted SENSE' where the SENSE data consistency is weighted by the estimated noise, else ''."""
    return ", noise-weighted SENSE" if _in_effect(record, result, "noise_weighting", "off") == "auto" else ""


def _start(record: dict[str, Any], result: dict[str, Any]) -> str:
    """Where sampling starts: 'noise (t = 1)' or 't0 T (noised zero-filled)'."""
    t0 = _in_effect(record, result, "t0", 1.0)
    if t0 < 1:
        return f"t0 {t0:g} (noised zero-filled)"
    clean = record.get("t0_clean") if _in_effect(record, result, "noise_weighting", "off") == "auto" else None
    return "noise (t = 1)" + (f"; SENSE on clean data t0 {clean:g}" if clean is not None else "")


def _flips(record: dict[str, Any], result: dict[str, Any]) -> str:
    """'; flip cycle' where network calls cycle through the image's flips, else ''."""
    return "; flip cycle" if _in_effect(record, result, "flip_cycle", False) else ""


def markdown(result: dict[str, Any]) -> str:
    """Markdown report: DSM loss table, reconstruction table per kind (PSNR / SSIM, difference to BART)."""
    st = result["settings"]
    sig = [f"{s:g}" for s in st["sigmas"]]
    per_source = ", ".join(f"{k} {v}" for k, v in result["images_per_source"].items())
    lines = [f"# Score-prior quality ({result['created']})", "",
             f"Machine: {result['machine']}; total {result['timing']['total_s']:.0f} s. "
             f"Images: {len(result['images'])} ({per_source}){', size ' + str(st['size']) if st['size'] else ''}. "
             f"Masks: {st['mask']} (seeded per image, the same for every method); score priors at their config's "
             "sampling defaults"
             f"{' with N = ' + str(st['N']) if st['N'] else ''}.", "",
             "## Checkpoints", "",
             "| name | config | file | precision | complex mode | start | step | EMA | snapshot | MB | sha256 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in result["checkpoints"].items():
        f = c["file"]
        lines.append(f"| {name} | {f['config']} | {f['path']} | {f.get('precision', 'fp32')} | "
                     f"{f.get('complex_mode', '-')}{_smoothing(f, result)}{_weighting(f, result)} | "
                     f"{_start(f, result)}{_flips(f, result)} | {f['step']} | "
                     f"{f['ema_weights']} | "
                     f"{f['training_snapshot']} | {f['size_MB']} | {f['sha256_16']} |")
    lines += ["", "## Held-out denoising score-matching loss", "",
              "Mean over pixels and images of (sigma s(x + sigma z) + z)^2, sigma relative to [0, 1] images, "
              "fixed seeded z (1.0 = zero output; lower is better).", "",
              "| checkpoint | data | " + " | ".join(f"sigma {s}" for s in sig) + " |",
              "|---|---|" + "---|" * len(sig)]
    for name, c in result["checkpoints"].items():
        for data, d in [("all", c["dsm"])] + list(c["dsm_by_source"].items()):
            lines.append(f"| {name} | {data} | " + " | ".join(_fmt(d.get(s), 4) for s in sig) + " |")
    kinds = list(dict.fromkeys(r["kind"] for r in result["rows"]))
    lines += ["", "## Reconstruction (gaussian1d x4)", "",
              "Cells: mean PSNR (dB) / SSIM, in brackets the mean difference to BART pics-l1 on the same images."
              + (f" 8-coil cases: complex white noise of std {st['coil_noise']:g} added to every coil image (images "
                 "scaled to max 1; ground truth noise-free; BART's lambda stays the noise-free one)."
                 if st.get("coil_noise") else ""),
              "", "| method | " + " | ".join(f"{k} ({result['images_per_kind'][k]} img)" for k in kinds)
              + " | s / recon | calls |", "|---|" + "---|" * (len(kinds) + 2)]

    def cells(summ: dict[str, dict[str, Any]], ref: bool) -> str:
        """One table row's cells: per kind PSNR / SSIM (and the difference to BART), seconds, calls."""
        out = []
        for k in kinds:
            s = summ.get(k)
            if not s:
                out.append("-")
                continue
            txt = f"{_fmt(s['psnr'])} / {_fmt(s['ssim'], 3)}"
            if not ref and s["dpsnr_bart"] is not None:
                txt += f" ({s['dpsnr_bart']:+.2f} / {s['dssim_bart']:+.3f})"
            out.append(txt)
        secs = _mean([s["seconds"] for s in summ.values()])
        calls = _mean([s["network_calls"] for s in summ.values()])
        return " | ".join(out) + f" | {_fmt(secs, 1)} | {_fmt(calls, 0)}"

    for method, summ in result["reference"].items():
        lines.append(f"| {method} (reference) | {cells(summ, True)} |")
    for name, c in result["checkpoints"].items():
        lines.append(f"| {name} | {cells(c['recon'], False)} |")
    srcs = list(dict.fromkeys(r["source"] for r in result["rows"] if r["kind"] == "real"))
    if srcs:  # no real-valued cases (--kinds complex coil8): no per-source table
        lines += ["", "### Real-valued (Algorithm 2) per source", "",
                  "| method | " + " | ".join(srcs) + " |", "|---|" + "---|" * len(srcs)]
        by_src = [(m, s) for m, s in result["reference_real_by_source"].items()] + \
                 [(n, c["recon_real_by_source"]) for n, c in result["checkpoints"].items()]
        for method, summ in by_src:
            lines.append(f"| {method} | " + " | ".join(
                f"{_fmt(summ[s]['psnr'])} / {_fmt(summ[s]['ssim'], 3)}" if s in summ else "-" for s in srcs) + " |")
    lines += ["", "## Per image", "", "| kind | image | method | PSNR | SSIM | s | calls |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['image']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['seconds']:.1f} | {r['network_calls']} |")
    lines += ["", "Timing (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["timing"].items()), ""]
    return "\n".join(lines)


def _display(path: Path) -> str:
    """A path relative to the repository when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=parse_prior, action="append", default=None, metavar="NAME=CONFIG:PATH[@bf16][#MODE]",
                   help="a checkpoint to compare (repeat; default: the shipped prior); @bf16 runs its network "
                        "calls in bf16 (default fp32); #phase (or #ri, #phase_ri) overrides the config's complex "
                        "mode of the complex and coil cases")
    p.add_argument("--quick", action="store_true",
                   help="one image per source and one complex / 8-coil image (a smoke run)")
    p.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    p.add_argument("--per_source", type=int, default=None, help="at most this many images per source")
    p.add_argument("--size", type=int, default=None, help="centre crop / zero-pad every image to SIZE x SIZE")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--recon_images", nargs="+", default=None,
                   help="images that get reconstruction rows (default: every loaded image; the loss uses all)")
    p.add_argument("--complex_images", nargs="+", default=None,
                   help=f"images that get complex and 8-coil rows (default {' '.join(COMPLEX_IMAGES)}; "
                        "--quick: the first loaded one)")
    p.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    p.add_argument("--N", type=int, default=None, help="override the configs' sampling.N (default: embedded)")
    p.add_argument("--residual_smoothing", type=float, default=None, metavar="PIXELS",
                   help="override every config's sampling.residual_smoothing (phase_ri's final imaginary-residual "
                        "smoothing; 0 turns it off)")
    p.add_argument("--nonnegative", action=argparse.BooleanOptionalAction, default=None,
                   help="override every config's sampling.nonnegative (real-valued runs: final image clipped at 0 "
                        "and made data-consistent again)")
    p.add_argument("--flip_cycle", action=argparse.BooleanOptionalAction, default=None,
                   help="override every config's sampling.flip_cycle (network call k sees the image flipped by the "
                        "k mod 4 element of none, left-right, up-down, both)")
    p.add_argument("--t0", type=float, default=None,
                   help="override every config's start time: 1 samples from noise, t0 < 1 starts from the noised "
                        "zero-filled image at sigma(t0)")
    p.add_argument("--noise_weighting", choices=("auto", "off"), default=None,
                   help="override every config's sampling.noise_weighting (SENSE data consistency weighted by the "
                        "noise estimated from the outer measured k-space)")
    p.add_argument("--coil_noise", type=float, default=0.0, metavar="STD",
                   help="complex white noise of this standard deviation added to the 8-coil cases' coil images "
                        "(images scaled to max 1; the ground truth stays noise-free)")
    p.add_argument("--no_recon", action="store_true", help="denoising loss only")
    p.add_argument("--no_bart", action="store_true", help="skip BART even when it is on PATH")
    p.add_argument("--seed", type=int, default=0, help="noise and mask seed")
    p.add_argument("--data_root", type=Path, default=None, help="default $SCORE_MRI_SHARED/data or ../shared/data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.ckpt is None:
        args.ckpt = [parse_prior("shipped=configs/ve/colin27_ncsnpp_small.py:weights/colin27_ncsnpp_small.pth")]
    names = [c.name for c in args.ckpt]
    if len(set(names)) != len(names):
        p.error(f"--ckpt names must differ, got {names}")
    for c in args.ckpt:
        if not c.config.is_file() or not c.path.is_file():
            p.error(f"--ckpt {c.name}: {c.config if not c.config.is_file() else c.path} not found")
    if args.t0 is not None and not 1e-5 < args.t0 <= 1:
        p.error(f"--t0 must be in (1e-5, 1], got {args.t0:g}")
    if args.per_source is None:
        args.per_source = 1 if args.quick else None
    args.data_root = args.data_root or default_data_root()
    if not args.data_root.is_dir():
        p.error(f"data folder {args.data_root} not found (set SCORE_MRI_SHARED or --data_root)")
    return args


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling settings this run overrides for every checkpoint (None: the config's)."""
    return {k: getattr(args, k) for k in ("residual_smoothing", "nonnegative", "t0", "noise_weighting", "flip_cycle")}


def assemble(args: argparse.Namespace, images: list[Image], cases: list[Case], kinds: list[str],
             complex_names: list[str], bart: bool, rows: list[dict[str, Any]], checkpoints: dict[str, Any],
             timing: dict[str, float], t_start: float) -> dict[str, Any]:
    """The result object (JSON) from the rows and checkpoint records gathered so far."""
    classical, common = project_module("classical"), project_module("common")
    for name, c in checkpoints.items():
        c["recon"] = summarize(rows, name, "kind")
        c["recon_real_by_source"] = summarize([r for r in rows if r["kind"] == "real"], name, "source")
    refs = [m for m in ("BART pics-l1", "ZF") if any(r["method"] == m for r in rows)]
    timing = {**timing, "total_s": time.time() - t_start}
    return {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpu, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} thread(s), load {common.loadavg()}",
        "command": "python benchmarks/prior_quality.py " + " ".join(sys.argv[1:]) if argv_is_cli() else None,
        "settings": {"sigmas": list(args.sigmas), "mask": f"{MASK_TYPE} x{ACC:g} (centre {CENTER_FRACTION}; "
                                                          f"complex / coil cases max({CENTER_FRACTION}, 14 / size))",
                     "N": args.N, **run_overrides(args), "coil_noise": args.coil_noise, "seed": args.seed, "size": args.size, "quick": args.quick, "kinds": kinds,
                     "complex_images": complex_names, "n_coils": N_COILS, "bart": bart,
                     "bart_lambda": classical.BART_LAMBDA, "data_root": str(args.data_root)},
        "images": [{"name": im.name, "source": im.source, "shape": list(im.x.shape)} for im in images],
        "images_per_source": {s: sum(im.source == s for im in images)
                              for s in dict.fromkeys(im.source for im in images)},
        "images_per_kind": {k: sum(c.kind == k for c in cases) for k in kinds},
        "reference": {m: summarize(rows, m, "kind") for m in refs},
        "reference_real_by_source": {m: summarize([r for r in rows if r["kind"] == "real"], m, "source") for m in refs},
        "checkpoints": checkpoints, "rows": rows, "timing": {k: round(v, 1) for k, v in timing.items()}}


def argv_is_cli() -> bool:
    """True when this file runs as the command-line script (sys.argv holds its flags)."""
    return Path(sys.argv[0]).name == Path(__file__).name


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the comparison, write prior_quality.json / .md and return the result."""
    args = parse_args(argv)
    classical, common = project_module("classical"), project_module("common")
    t_start = time.time()

    def log(msg: str) -> None:
        """Progress line with the elapsed time."""
        print(f"[{time.time() - t_start:7.1f} s] {msg}", flush=True)

    images = load_images(args.data_root, args.sources, args.per_source, args.size)
    sigmas = tuple(args.sigmas)
    complex_names = args.complex_images or ([next((n for n in COMPLEX_IMAGES if n in {im.name for im in images}),
                                                  images[0].name)] if args.quick else list(COMPLEX_IMAGES))
    kinds = [] if args.no_recon else args.kinds
    recon_names = set(args.recon_images or [im.name for im in images]) | set(complex_names)
    unknown = recon_names - {im.name for im in images}
    if unknown:
        raise SystemExit(f"--recon_images / --complex_images: not among the loaded images: {sorted(unknown)}")
    cases = [c for c in make_cases(images, kinds, complex_names, args.seed, args.coil_noise)
             if c.image.name in recon_names and (c.kind != "real" or not args.recon_images
                                                 or c.image.name in args.recon_images)]
    log(f"{len(images)} images, {len(cases)} reconstruction cases, {len(args.ckpt)} checkpoints")
    bart = classical.bart_available() and not args.no_bart
    rows: list[dict[str, Any]] = []
    timing: dict[str, float] = {}

    tic = time.time()
    for case in cases:
        for r in reference_rows(case, bart):
            rows.append({"kind": case.kind, "image": case.image.name, "source": case.image.source, **r})
            log(f"{case.kind:7s} {case.image.name:10s} {r['method']:14s} {r['psnr']:6.2f} dB {r['ssim']:.4f}")
    timing["reference"] = time.time() - tic

    checkpoints: dict[str, Any] = {}
    for prior in args.ckpt:
        tic = time.time()
        config, model, record = load_prior(prior, args.device)
        t_load = time.time() - tic
        log(f"{prior.name}: loaded {record['path']} (step {record['step']}, EMA {record['ema_weights']})")
        tic = time.time()
        per_image = dsm_losses(model, config, images, sigmas, args.seed)
        t_dsm = time.time() - tic
        dsm = {im.name: v for im, v in zip(images, per_image)}
        log(f"{prior.name}: DSM " + " ".join(f"{s:g}:{np.mean([v[j] for v in per_image]):.4f}"
                                             for j, s in enumerate(sigmas)) + f" ({t_dsm:.1f} s)")
        tic = time.time()
        for case in cases:
            try:
                r = prior_row(case, model, config, args.N, args.device, complex_mode=prior.complex_mode,
                              **run_overrides(args))
            except Exception as e:  # one failing run must not lose the others
                log(f"{case.kind:7s} {case.image.name:10s} {prior.name}: FAILED {type(e).__name__}: {e}")
                continue
            rows.append({"kind": case.kind, "image": case.image.name, "source": case.image.source,
                         "method": prior.name, **r})
            log(f"{case.kind:7s} {case.image.name:10s} {prior.name:14s} {r['psnr']:6.2f} dB {r['ssim']:.4f} "
                f"({r['seconds']:.1f} s, {r['network_calls']} calls)")
        t_rec = time.time() - tic
        timing[f"{prior.name}_load"], timing[f"{prior.name}_dsm"], timing[f"{prior.name}_recon"] = t_load, t_dsm, t_rec
        checkpoints[prior.name] = {
            "file": record, "dsm": dsm_summary(dsm, images, sigmas),
            "dsm_by_source": {s: dsm_summary(dsm, images, sigmas, s)
                              for s in dict.fromkeys(im.source for im in images)},
            "dsm_per_image": {k: dict(zip((f"{s:g}" for s in sigmas), v)) for k, v in dsm.items()}}
        del model
        partial = assemble(args, images, cases, kinds, complex_names, bart, rows, checkpoints, timing, t_start)
        common.write_results("prior_quality", partial, markdown(partial), args.out)  # partial results so far

    result = assemble(args, images, cases, kinds, complex_names, bart, rows, checkpoints, timing, t_start)
    md = markdown(result)
    jpath, mpath = common.write_results("prior_quality", result, md, args.out)
    print("\n" + md, flush=True)
    log(f"wrote {jpath} and {mpath}")
    return result


if __name__ == "__main__":
    main()
