"""Shared machinery of the four ``inference_*.py`` scripts (STYLE guideline 8).

Each script only describes its algorithm through an :class:`Algorithm` (which FFT convention,
which sampler builder, how to combine coils); everything else lives here: command-line flags,
config and checkpoint loading, reading ``.npy`` / fastMRI ``.h5`` / BART ``.cfl`` inputs
(SPEC section 6b), retrospective masks, sampling with a progress bar, metrics and writing the
results under ``<save_dir>/<kind>/``.  Bad input raises :class:`UserError`, which :func:`main`
reports as one line on stderr with exit status 2, before any result file is written.
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from io_utils import UserError, cfl_to_kspace, check_finite, read_cfl, read_h5, read_npy

REPO = Path(__file__).resolve().parent
DEFAULT_CONFIG = REPO / "configs" / "ve" / "colin27_ncsnpp_small.py"
DEFAULT_CKPT = REPO / "weights" / "colin27_ncsnpp_small.pth"
MASK_TYPES = ("gaussian1d", "uniform1d", "gaussian2d", "uniformrandom2d", "poisson")
TASKS = ("retrospective", "prospective")
KSPACE_SUFFIXES = (".h5", ".hdf5", ".cfl", ".hdr")
N_PROGRESS = 6  # progress images saved per run (recon_progress/)

__all__ = ["UserError", "Algorithm", "Context", "load_config", "build_parser", "resolve_data",
           "load_problem", "main", "run"]


# ----------------------------------------------------------------------------------------------------------
# Configuration and command line
# ----------------------------------------------------------------------------------------------------------

def load_config(path: str | Path):
    """Import a python config file by path and return its ``get_config()`` (ml_collections style)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_score_mri_config_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"cannot load config {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config {path} has no get_config() function")
    return module.get_config()


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr with exit status 2."""

    def error(self, message: str):
        """Print ``prog: error: message`` (one line) and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(description: str, *, task: bool = True) -> argparse.ArgumentParser:
    """Flags shared by every script: the original's, plus config/checkpoint, seed, device and sampler settings."""
    p = _Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="sample name (looked up in <repo>/samples/<kind>/) or a path to .npy (image), "
                        ".h5 (fastMRI k-space) or .cfl/.hdr (BART k-space)")
    if task:
        p.add_argument("--task", choices=TASKS, default=None,
                       help="retrospective: simulate the mask on a fully sampled input; prospective: the input is "
                            "undersampled (.npy: aliased image plus {stem}_mask.npy beside it). Default: "
                            "retrospective for .npy, detected from the file for k-space inputs")
    p.add_argument("--mask_type", choices=MASK_TYPES, default="gaussian1d", help="retrospective mask type")
    p.add_argument("--acc_factor", type=float, default=4, help="retrospective acceleration factor")
    p.add_argument("--center_fraction", type=float, default=0.08, help="fully sampled centre fraction (1-D masks)")
    p.add_argument("--N", type=int, default=None,
                   help="number of diffusion steps (default: config.sampling.N, else config.model.num_scales)")
    p.add_argument("--m", type=int, default=None,
                   help="corrector steps per predictor step (default: config.sampling.n_steps_each)")
    p.add_argument("--snr", type=float, default=None, help="Langevin corrector SNR (default: config.sampling.snr)")
    p.add_argument("--predictor", default=None, help="predictor name (default: config.sampling.predictor)")
    p.add_argument("--corrector", default=None, help="corrector name (default: config.sampling.corrector)")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="few-step mode: start the reverse diffusion at t0 from the zero-filled image "
                        "(default: config.sampling.fast)")
    p.add_argument("--t0", type=float, default=None, help="start time of the fast mode in (0, 1]; implies --fast")
    p.add_argument("--num_samples", type=int, default=1,
                   help="K posterior samples; K > 1 saves their mean as recon and their std")
    p.add_argument("--faithful", action="store_true",
                   help="reproduce the original's sampler quirks (batch-mean Langevin step, lambda over 2000, ...)")
    p.add_argument("--slice", type=int, default=None, help="slice of an .h5 file (default: the middle slice)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="python config file with get_config()")
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="checkpoint (.pth) matching the config")
    p.add_argument("--seed", type=int, default=None, help="seed of the mask and the sampler (default: config.seed)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--save_dir", default="./results", help="results root; outputs go to <save_dir>/<kind>/")
    return p


def _check_args(args: argparse.Namespace) -> None:
    """Range checks of the numeric flags that do not depend on the config."""
    if args.acc_factor < 1:
        raise UserError(f"--acc_factor must be >= 1, got {args.acc_factor}")
    if not 0 <= args.center_fraction < 1:
        raise UserError(f"--center_fraction must be in [0, 1), got {args.center_fraction}")
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")


def _setting(args: argparse.Namespace, config, flag: str, key: str, fallback: Any) -> Any:
    """A flag's value, else ``config.sampling.<key>``, else ``fallback``."""
    value = getattr(args, flag)
    if value is not None:
        return value
    sampling_cfg = getattr(config, "sampling", None)
    if sampling_cfg is not None and key in sampling_cfg:
        return sampling_cfg[key]
    return fallback


@dataclass
class Settings:
    """Sampler settings resolved from the flags and the config's ``sampling`` group."""
    N: int
    m: int
    snr: float
    predictor: str
    corrector: str
    fast: bool
    t0: float | None
    seed: int
    device: str


def resolve_settings(args: argparse.Namespace, config) -> Settings:
    """Fill unset flags from the config (SPEC 6b: the config holds the defaults) and check them."""
    N = _setting(args, config, "N", "N", config.model.num_scales)
    m = _setting(args, config, "m", "n_steps_each", 1)
    snr = _setting(args, config, "snr", "snr", 0.16)
    t0 = _setting(args, config, "t0", "t0", None)
    fast = bool(args.fast) if args.fast is not None else (args.t0 is not None or bool(_setting(args, config, "fast", "fast", False)))
    if int(N) < 1:
        raise UserError(f"--N must be >= 1, got {N}")
    if int(m) < 0:
        raise UserError(f"--m must be >= 0, got {m}")
    if float(snr) <= 0:
        raise UserError(f"--snr must be > 0, got {snr}")
    if fast and t0 is None:
        raise UserError("--fast needs --t0 (the config's sampling group has no t0)")
    if fast and not 1e-5 < float(t0) <= 1:
        raise UserError(f"--t0 must be in (1e-5, 1], got {t0}")
    seed = args.seed if args.seed is not None else int(getattr(config, "seed", 0))
    import torch
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here (use --device cpu)")
    return Settings(N=int(N), m=int(m), snr=float(snr),
                    predictor=str(_setting(args, config, "predictor", "predictor", "reverse_diffusion")),
                    corrector=str(_setting(args, config, "corrector", "corrector", "langevin")),
                    fast=fast, t0=float(t0) if fast else None, seed=int(seed), device=device)


# ----------------------------------------------------------------------------------------------------------
# Inputs (SPEC section 6b)
# ----------------------------------------------------------------------------------------------------------

def resolve_data(data: str, family: str, task: str | None) -> Path:
    """A value with '/' or a suffix is a path (relative to CWD); else a sample under <repo>/samples/."""
    if "/" in data or os.sep in data or Path(data).suffix:
        path = Path(data)
    else:
        sub = [family] + ([task or "retrospective"] if family == "real" else [])
        path = REPO.joinpath("samples", *sub, f"{data}.npy")
    if path.suffix.lower() == ".hdr":
        path = path.with_suffix(".cfl")
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    return path


@dataclass
class Problem:
    """One reconstruction problem: an image [C, H, W] (full for retrospective, aliased for prospective)."""
    name: str
    source: Path
    task: str
    image: np.ndarray               # [C, H, W] complex64 (float32 for the real algorithm, retrospective)
    mask: np.ndarray | None         # [H, W] float32 0/1 for prospective, None for retrospective (simulated)
    scale: float = 1.0              # the input was divided by this


def _ifft2c(k: np.ndarray) -> np.ndarray:
    """Centered orthonormal inverse FFT over the last two axes (fastMRI ``ifft2c``)."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _crop(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre crop of the last two axes to at most (h, w) (fastMRI ``center_crop``)."""
    H, W = x.shape[-2:]
    h, w = min(h, H), min(w, W)
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def _as_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """A 0/1 mask broadcast to [H, W]; [W] (column mask) and singleton dims are accepted."""
    mask = np.asarray(mask)
    check_finite(mask, what)
    mask = np.squeeze(mask)
    if np.iscomplexobj(mask):
        mask = mask.real
    if mask.ndim == 1 and mask.shape[0] == shape[1]:
        mask = np.broadcast_to(mask[None, :], shape)
    if mask.shape != tuple(shape):
        raise UserError(f"{what} has shape {np.shape(mask)}, which does not match the image {tuple(shape)}")
    if not np.isin(mask, (0, 1)).all():
        raise UserError(f"{what} must hold only 0 and 1")
    if not mask.any():
        raise UserError(f"{what} samples nothing (all zeros)")
    return np.ascontiguousarray(mask, dtype=np.float32)


def _image_from_npy(a: np.ndarray, path: Path, family: str) -> np.ndarray:
    """Bring an image array to [C, H, W] and check its rank for the algorithm family."""
    if family == "multi-coil":
        while a.ndim > 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 3:
            raise UserError(f"{path}: expected a multi-coil image [coils, H, W], got shape {a.shape}")
        return a
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise UserError(f"{path}: expected one image [H, W], got shape {a.shape}")
    return a[None]


def load_problem(args: argparse.Namespace, family: str, image_size: int) -> Problem:
    """Read ``--data`` (.npy image, .h5 or .cfl k-space) into a :class:`Problem` (SPEC 6b)."""
    task = getattr(args, "task", None)
    path = resolve_data(args.data, family, task)
    suffix = path.suffix.lower()
    if args.slice is not None and suffix not in (".h5", ".hdf5"):
        raise UserError(f"--slice applies to .h5 inputs only, not {path.name}")
    if suffix in KSPACE_SUFFIXES:
        if suffix in (".h5", ".hdf5"):  # fastMRI: crop to the stored reconstruction's size, else the model's
            ksp, stored_mask, s, crop = read_h5(path, args.slice)        # [C, H, W]
            name, crop = f"{path.stem}_s{s}", crop or (image_size, image_size)
        else:                           # BART: the k-space matrix as it is
            ksp, stored_mask, name, crop = cfl_to_kspace(read_cfl(path)), None, path.stem, None
        check_finite(ksp, f"k-space {path}")
        return _problem_from_kspace(ksp, stored_mask, name, path, task, family, crop)
    if suffix != ".npy":
        raise UserError(f"unsupported input {path}: expected .npy, .h5 or .cfl/.hdr")
    a = read_npy(path)
    check_finite(a, f"input {path}")
    image = _image_from_npy(a, path, family)
    task = task or "retrospective"
    mask = None
    if task == "prospective":
        mask_path = path.with_name(f"{path.stem}_mask.npy")
        mask = _as_mask(read_npy(mask_path, "mask"), image.shape[-2:], f"mask {mask_path}")
    scale = 1.0
    if family == "multi-coil":  # as the original's normalize_complex (magnitude only, phase kept)
        scale = float(np.abs(image).max()) or 1.0
    return _finish(Problem(name=path.stem, source=path, task=task, image=image / scale, mask=mask,
                           scale=scale), family)


def _mask_from_zeros(ksp: np.ndarray, path: Path) -> np.ndarray | None:
    """Mask [H, W] of the nonzero k-space points, or None when fully sampled.

    Fully sampled means: every point inside the bounding box of the nonzero points is nonzero (99 %), so
    zero-padded edges (fastMRI raw data) and the odd exact zero do not turn a full file into a prospective one.
    """
    sampled = (np.abs(ksp) > 0).any(axis=0)                              # [H, W]
    if not sampled.any():
        raise UserError(f"k-space in {path} is all zeros")
    rows, cols = np.flatnonzero(sampled.any(axis=1)), np.flatnonzero(sampled.any(axis=0))
    box = sampled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return None if box.mean() >= 0.99 else sampled.astype(np.float32)


def _problem_from_kspace(ksp: np.ndarray, stored_mask: np.ndarray | None, name: str, path: Path,
                         task: str | None, family: str, crop: tuple[int, int] | None) -> Problem:
    """k-space [C, H, W] -> image, centre-cropped in image space to ``crop`` as fastMRI does.

    Prospective data with a column mask is cropped along the readout (rows) only, which keeps the
    measured columns exact; other prospective data is not cropped.
    """
    shape = ksp.shape[-2:]
    if stored_mask is not None:
        mask = _as_mask(stored_mask, shape, f"stored mask of {path}")
    else:
        mask = _mask_from_zeros(ksp, path)
    task = task or ("prospective" if mask is not None else "retrospective")
    if task == "retrospective":
        image = _ifft2c(ksp)                                            # [C, H, W]
        image = image if crop is None else _crop(image, *crop)          # [C, h, w]
        mask = None
    else:
        if mask is None:
            raise UserError(f"--task prospective: {path} is fully sampled and stores no mask")
        image = _ifft2c(ksp * mask)                                     # aliased [C, H, W]
        if crop is not None and (mask == mask[:1]).all():  # column mask: a readout (row) crop is exact
            image = _crop(image, crop[0], image.shape[-1])
            mask = np.ascontiguousarray(mask[:image.shape[-2]])
    if family != "multi-coil" and image.shape[0] > 1:
        if not (family == "real" and task == "retrospective"):
            raise UserError(f"{path} holds {image.shape[0]} coils: use inference_multi-coil_SSOS.py or "
                            f"inference_multi-coil_hybrid.py")
        image = np.sqrt(np.sum(np.abs(image) ** 2, axis=0, keepdims=True))  # RSS magnitude [1, h, w]
    scale = float(np.abs(image).max()) or 1.0
    return _finish(Problem(name=name, source=path, task=task, image=image / scale, mask=mask, scale=scale),
                   family)


def _finish(problem: Problem, family: str) -> Problem:
    """Final dtype: a real image for the real algorithm's retrospective label, complex64 otherwise."""
    if family == "real" and problem.task == "retrospective":
        # the real-valued algorithm (Algorithm 2) reconstructs magnitude images
        problem.image = np.abs(problem.image).astype(np.float32) if np.iscomplexobj(problem.image) \
            else problem.image.astype(np.float32)
    else:
        problem.image = problem.image.astype(np.complex64)
    return problem


# ----------------------------------------------------------------------------------------------------------
# Model and algorithm
# ----------------------------------------------------------------------------------------------------------

def load_model(config, ckpt: str | Path, device: str):
    """Create the score model of ``config`` and load the checkpoint's (EMA) weights for inference."""
    import torch
    from models import utils as mutils
    from models.checkpoint import CheckpointError, load_model_weights

    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise UserError(f"checkpoint not found: {ckpt}")
    try:
        device = torch.device(device)
        model = mutils.create_model(config, device=device)
        load_model_weights(ckpt, model, device=device)
    except CheckpointError as e:  # its message names the file and says what is wrong (unreadable / mismatch)
        raise UserError(str(e).splitlines()[0]) from None
    except RuntimeError as e:
        if "device" in str(e).lower() or "cuda" in str(e).lower():
            raise UserError(f"device {device}: {e}".splitlines()[0]) from None
        raise
    import perf
    perf.configure_cpu_allocator()  # keep freed activations in the heap: no page faults per forward (SPEC 8)
    return perf.prepare_model_for_inference(model, device)  # eval, frozen, channels_last on the CPU


@dataclass
class Context:
    """What an algorithm's sampler builder needs (see :class:`Algorithm`)."""
    args: argparse.Namespace
    config: Any
    settings: Settings
    problem: Problem
    root: Path                       # <save_dir>/<kind>, where the results will go
    sde: Any
    predictor: type
    corrector: type
    inverse_scaler: Callable
    mask: Any                        # [1, C, H, W] torch 0/1
    Fy: Any                          # [1, C, H, W] torch complex measured k-space
    generator: Any                   # torch.Generator
    callback: Callable | None
    extra_outputs: dict[str, Any] = field(default_factory=dict)  # relative path -> array or text

    def sampler_kwargs(self, builder: Callable) -> dict:
        """Keyword arguments common to every sampler builder, filtered to those ``builder`` accepts."""
        kw = dict(snr=self.settings.snr, n_steps=self.settings.m, probability_flow=False,
                  continuous=self.config.training.continuous, denoise=True,
                  generator=self.generator, faithful=self.args.faithful, callback=self.callback)
        if self.settings.fast:
            kw["t0"] = self.settings.t0
        params = inspect.signature(builder).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return kw
        if self.settings.fast and "t0" not in params:
            raise UserError(f"{builder.__name__} has no fast mode (t0): drop --fast/--t0")
        return {k: v for k, v in kw.items() if k in params}


@dataclass
class Algorithm:
    """What differs between the scripts.

    ``build(ctx)`` returns ``sample(model, x_zf) -> x`` with x and x_zf as [1, C, H, W] tensors;
    ``fft``/``ifft`` are the algorithm's FFT convention; ``real_valued`` marks Algorithm 2 (real images).
    """
    family: str                                   # 'real', 'single-coil' or 'multi-coil' (samples folder)
    kind: str                                     # output folder below save_dir ('real' gets /<task>)
    fft: Callable
    ifft: Callable
    build: Callable[[Context], Callable]
    real_valued: bool = False
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None
    description: str = ""


def _predictor_corrector(settings: Settings):
    """Predictor and corrector classes from their registered names ('reverse_diffusion', 'langevin', ...)."""
    import sampling
    try:
        return sampling.get_predictor(settings.predictor), sampling.get_corrector(settings.corrector)
    except ValueError as e:
        raise UserError(str(e)) from None


def _output(x, real_valued: bool) -> np.ndarray:
    """Tensor [1, C, H, W] -> the saved image [H, W]: real part (Alg. 2), complex (1 coil) or RSS (coils)."""
    import torch
    x = x.detach().cpu()
    if x.shape[1] > 1:
        return torch.sqrt(torch.sum(torch.abs(x) ** 2, dim=1))[0].numpy()
    x = x[0, 0]
    return (x.real if (real_valued and x.is_complex()) else x).numpy()


def _magnitude(img: np.ndarray) -> np.ndarray:
    """Magnitude image for metrics and pngs."""
    return np.abs(img) if np.iscomplexobj(img) else np.asarray(img)


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------

def _measure(alg: Algorithm, args: argparse.Namespace, settings: Settings, problem: Problem, image):
    """Mask [1, C, H, W] (given, or simulated with ``utils.get_mask``), measured k-space Fy and zero-filled x."""
    import torch
    import utils

    H, W = image.shape[-2:]
    if problem.mask is None:
        if not args.mask_type.endswith("1d") and H != W:
            raise UserError(f"mask type {args.mask_type} needs a square image, got {H}x{W}")
        try:
            mask = utils.get_mask(image, W, 1, type=args.mask_type, acc_factor=args.acc_factor,
                                  center_fraction=args.center_fraction, seed=settings.seed)
        except ValueError as e:
            raise UserError(f"cannot build a {args.mask_type} mask: {e}".splitlines()[0]) from None
        mask = mask.real.float() if mask.is_complex() else mask.float()
    else:
        mask = torch.from_numpy(problem.mask).to(image.device).expand(image.shape).contiguous()
    if not mask.any():
        raise UserError("the mask samples nothing (lower --acc_factor)")
    Fy = alg.fft(image.to(torch.complex64)) * mask                        # [1, C, H, W] measured k-space
    x_zf = alg.ifft(Fy)                                                   # [1, C, H, W] zero-filled
    return mask, Fy, (x_zf.real if alg.real_valued else x_zf)


def run(alg: Algorithm, argv: list[str] | None = None) -> dict:
    """Parse flags, reconstruct, write the results and print a one-line summary; returns the metrics dict."""
    parser = build_parser(alg.description)
    if alg.extra_args is not None:
        alg.extra_args(parser)
    args = parser.parse_args(argv)
    _check_args(args)
    config = load_config(args.config)
    settings = resolve_settings(args, config)
    problem = load_problem(args, alg.family, int(config.data.image_size))
    kind = f"{alg.kind}/{problem.task}" if alg.family == "real" else alg.kind
    levels = len(config.model.ch_mult)
    factor = 2 ** (levels - 1)
    H, W = problem.image.shape[-2:]
    if H % factor or W % factor:
        raise UserError(f"image size {H}x{W} is not divisible by {factor} = 2**(levels-1) of the model "
                        f"({levels} levels in config.model.ch_mult)")
    predictor, corrector = _predictor_corrector(settings)

    import torch
    import utils
    from sde_lib import VESDE
    from tqdm import tqdm

    model = load_model(config, args.ckpt, settings.device)
    device = next(model.parameters()).device
    image = torch.from_numpy(problem.image)[None].to(device)           # [1, C, H, W]
    mask, Fy, x_zf = _measure(alg, args, settings, problem, image)
    scaler, inverse_scaler = utils.get_data_scaler(config), utils.get_data_inverse_scaler(config)
    sde = VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max, N=settings.N)

    progress, state = {}, {"k": 0, "bar": None}

    def callback(i: int, n: int, x) -> None:
        """Advance the progress bar; keep a handful of intermediate images of the first sample."""
        if state["bar"] is None:
            state["bar"] = tqdm(total=n * args.num_samples, desc=problem.name, unit="step", disable=None)
        state["bar"].update(1)
        if state["k"] == 0 and i in set(np.linspace(0, n - 1, N_PROGRESS).round().astype(int).tolist()):
            progress[i] = _magnitude(_output(x, alg.real_valued))

    ctx = Context(args=args, config=config, settings=settings, problem=problem, root=Path(args.save_dir) / kind,
                  sde=sde, predictor=predictor, corrector=corrector, inverse_scaler=inverse_scaler, mask=mask,
                  Fy=Fy, generator=torch.Generator(device=device).manual_seed(settings.seed), callback=callback)
    sample = alg.build(ctx)
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    tic = time.time()
    samples = []
    with torch.no_grad():
        for k in range(args.num_samples):  # K posterior samples from one generator stream
            state["k"] = k
            samples.append(_output(sample(model, scaler(x_zf)), alg.real_valued))
    seconds = time.time() - tic
    hook.remove()
    if state["bar"] is not None:
        state["bar"].close()

    samples = np.stack(samples)                                           # [K, H, W]
    std = samples.std(axis=0) if args.num_samples > 1 else None          # complex: sqrt(mean |x - mean|^2)
    label = _output(image, alg.real_valued) if problem.task == "retrospective" else None
    return _save(args, settings, problem, kind, _output(x_zf, alg.real_valued),
                 mask[0, 0].cpu().numpy().astype(np.float32), label, samples.mean(axis=0), std, progress,
                 ctx.extra_outputs, seconds, calls[0])


def _metrics(label: np.ndarray | None, img: np.ndarray) -> dict | None:
    """fastMRI PSNR/SSIM/NMSE of a magnitude image against the label's magnitude."""
    import metrics
    if label is None:
        return None
    return metrics.evaluate(_magnitude(label).astype(np.float64), _magnitude(img).astype(np.float64))


def _figure(path: Path, name: str, panels: list[tuple[str, np.ndarray]], vmax: float) -> None:
    """One figure with the zero-filled input, recon, label (grey, common range [0, vmax]), |error| and std."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels):
        if "error" in title or "std" in title:
            im = ax.imshow(img, cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        else:
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save(args: argparse.Namespace, settings: Settings, problem: Problem, kind: str, x_in: np.ndarray,
          mask2d: np.ndarray, label: np.ndarray | None, recon: np.ndarray, std: np.ndarray | None,
          progress: dict[int, np.ndarray], extra: dict[str, Any], seconds: float, calls: int) -> dict:
    """Write every output into a scratch folder, then move the files into ``<save_dir>/<kind>/``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = problem.name
    zf_m, recon_m = _metrics(label, x_in), _metrics(label, recon)
    record = {
        "name": name, "input": str(problem.source.resolve()), "kind": kind, "task": problem.task,
        "zero_filled": zf_m, "recon": recon_m, "seconds": round(seconds, 3), "network_calls": calls,
        "N": settings.N, "m": settings.m, "snr": settings.snr, "predictor": settings.predictor,
        "corrector": settings.corrector, "fast": settings.fast, "t0": settings.t0, "seed": settings.seed,
        "num_samples": args.num_samples, "faithful": bool(args.faithful),
        "mask_type": args.mask_type if problem.task == "retrospective" else "given",
        "acc_factor": args.acc_factor if problem.task == "retrospective" else None,
        "center_fraction": args.center_fraction if problem.task == "retrospective" else None,
        "sampled_fraction": float(mask2d.mean()), "shape": list(problem.image.shape),
        "scale": problem.scale, "config": str(Path(args.config).resolve()),
        "ckpt": str(Path(args.ckpt).resolve()), "device": settings.device,
    }
    record.update({k: v for k, v in vars(args).items() if k in ("m_steps", "lamb_start", "lamb_end",
                                                                 "espirit_from_full") and v is not None})

    root = Path(args.save_dir) / kind
    root.mkdir(parents=True, exist_ok=True)
    scratch = root / f".tmp-{name}-{os.getpid()}"
    try:
        def put(rel: str, array: np.ndarray | None = None, png: bool = False) -> Path:
            p = scratch / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if array is not None:
                if png:
                    plt.imsave(p, _magnitude(array), cmap="gray")
                else:
                    np.save(p, array)
            return p

        for sub, img in (("input", x_in), ("label", label), ("recon", recon)):
            if img is not None:
                put(f"{sub}/{name}.npy", img)
                put(f"{sub}/{name}.png", img, png=True)
        put(f"input/{name}_mask.npy", mask2d)
        if std is not None:
            put(f"recon/{name}_std.npy", std)
            put(f"recon/{name}_std.png", std, png=True)
        for i, img in sorted(progress.items()):
            put(f"recon_progress/{name}_{i:04d}.png", img, png=True)
        for rel, value in extra.items():  # e.g. hybrid's sens/{name}.npy (+ its cache key)
            if isinstance(value, str):
                put(rel).write_text(value)
            else:
                put(rel, value)
        put(f"{name}_metrics.json").write_text(json.dumps(record, indent=2) + "\n")

        def title(what: str, m: dict | None) -> str:
            return what if m is None else f"{what}\n{m['psnr']:.2f} dB / SSIM {m['ssim']:.3f}"

        panels = [(title("zero-filled", zf_m), _magnitude(x_in)), (title("recon", recon_m), _magnitude(recon))]
        if label is not None:
            panels += [("label", _magnitude(label)),
                       ("|error|", np.abs(_magnitude(label) - _magnitude(recon)))]
        if std is not None:
            panels.append((f"std (K={args.num_samples})", _magnitude(std)))
        vmax = float(_magnitude(label if label is not None else x_in).max()) or 1.0
        _figure(put(f"{name}_figure.png"), f"{name} ({kind}, N={settings.N})", panels, vmax)

        for p in sorted(scratch.rglob("*")):
            if p.is_file():
                dest = root / p.relative_to(scratch)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    if recon_m is not None:
        summary = (f"{name}: ZF {zf_m['psnr']:.1f} dB / {zf_m['ssim']:.2f} -> recon {recon_m['psnr']:.1f} dB / "
                   f"{recon_m['ssim']:.2f} SSIM")
    else:
        summary = f"{name}: recon (no label)"
    print(f"{summary} in {seconds:.0f} s ({calls} network calls) -> {root}")
    return record


def main(alg: Algorithm, argv: list[str] | None = None) -> None:
    """Entry point of a script: bad input -> one line on stderr and exit status 2, no result files."""
    try:
        run(alg, argv)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
