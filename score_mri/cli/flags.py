"""Command-line flags of the ``inference_*.py`` scripts and their resolution into sampler settings.

Unset sampler flags come from the config's ``sampling`` group (the config holds the defaults), so the
embedded prior's few-step defaults and the paper's knee settings are both one ``--config`` away.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from score_mri.config import load_config
from score_mri.errors import UserError
from score_mri.paths import DEFAULT_CKPT, DEFAULT_CONFIG
from score_mri.physics.masks import MASK_TYPES

TASKS = ("retrospective", "prospective")

__all__ = ["DEFAULT_CONFIG", "DEFAULT_CKPT", "MASK_TYPES", "TASKS", "Parser", "load_config", "build_parser",
           "RunOptions", "resolve"]


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line on stderr with exit status 2."""

    def error(self, message: str):
        """Print ``prog: error: message`` (one line) and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def finite_float(text: str) -> float:
    """argparse type: a finite float (NaN and Inf are refused)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def build_parser(description: str, *, task: bool = True) -> argparse.ArgumentParser:
    """Flags shared by every script: the original's, plus config/checkpoint, seed, device and sampler settings."""
    p = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="sample name (looked up in <repo>/samples/<kind>/) or a path to .npy (image), "
                        ".h5 (fastMRI or ISMRMRD/MRD k-space), .mrd, .dat (Siemens twix) or .cfl/.hdr (BART "
                        "k-space); a folder or a quoted glob of .h5 files runs them all")
    if task:
        p.add_argument("--task", choices=TASKS, default=None,
                       help="retrospective: simulate the mask on a fully sampled input; prospective: the input is "
                            "undersampled (.npy: aliased image plus {stem}_mask.npy beside it). Default: "
                            "retrospective for .npy, detected from the file for k-space inputs")
    p.add_argument("--mask_type", choices=MASK_TYPES, default="gaussian1d", help="retrospective mask type")
    p.add_argument("--acc_factor", type=finite_float, default=4, help="retrospective acceleration factor")
    p.add_argument("--center_fraction", type=finite_float, default=0.08,
                   help="fully sampled centre fraction (1-D masks)")
    p.add_argument("--N", type=int, default=None,
                   help="number of diffusion steps (default: config.sampling.N, else config.model.num_scales)")
    p.add_argument("--m", type=int, default=None,
                   help="corrector steps per predictor step (default: config.sampling.n_steps_each)")
    p.add_argument("--snr", type=finite_float, default=None,
                   help="Langevin corrector SNR (default: config.sampling.snr)")
    p.add_argument("--predictor", default=None, help="predictor name (default: config.sampling.predictor)")
    p.add_argument("--corrector", default=None, help="corrector name (default: config.sampling.corrector)")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None,
                   help="few-step mode: start the reverse diffusion at t0 from the zero-filled image "
                        "(default: config.sampling.fast)")
    p.add_argument("--t0", type=finite_float, default=None,
                   help="start time of the fast mode in (0, 1]; implies --fast")
    p.add_argument("--eta", type=finite_float, default=None,
                   help="decomposed sampler (--predictor dds): re-noising stochasticity in [0, 1] (default: "
                        "config.sampling.eta, else 0)")
    p.add_argument("--grid", choices=("ve", "edm"), default=None,
                   help="time grid: 've' (linspace in t, geometric sigmas) or 'edm' (Karras et al. rho = 7)")
    p.add_argument("--cg_iters", type=int, default=None,
                   help="conjugate-gradient iterations of the SENSE data consistency (default: config, else 5)")
    p.add_argument("--gamma", type=finite_float, default=None,
                   help="SENSE data consistency: weight of the prior's estimate (default: config, else 0.1)")
    p.add_argument("--noise_weighting", choices=("auto", "off"), default=None,
                   help="SENSE sampler: 'auto' estimates the measurement noise from the outermost measured "
                        "k-space and weights the prior's estimate at noise level sigma in each data-consistency "
                        "solve by (noise / sigma)^2 (at least --gamma), and starts clean data at "
                        "config.sampling.t0_clean; 'off' keeps --gamma fixed (default: "
                        "config.sampling.noise_weighting, else off)")
    p.add_argument("--complex_mode", choices=("ri", "phase", "phase_ri"), default=None,
                   help="complex data: 'ri' real/imaginary parts through the prior (the paper); 'phase' the real "
                        "part of the phase-demodulated image (phase from the measured centre); 'phase_ri' both "
                        "parts of the demodulated image (default: config.sampling.complex_mode, else ri)")
    p.add_argument("--residual_smoothing", type=finite_float, default=None, metavar="PIXELS",
                   help="complex_mode phase_ri: std in pixels of the Gaussian that smooths the imaginary residual "
                        "of the demodulated image before the final data consistency; 0 keeps it as sampled "
                        "(default: config.sampling.residual_smoothing, else 0)")
    p.add_argument("--finish_after_dc", action=argparse.BooleanOptionalAction, default=None,
                   help="single-coil complex data, complex_mode phase_ri: smooth the imaginary residual and clip the "
                        "real part once more after the final data consistency (less background noise; the output "
                        "then no longer holds the measured k-space exactly); --no-finish_after_dc keeps the "
                        "final data consistency last (default: config.sampling.finish_after_dc, else off)")
    p.add_argument("--flip_cycle", action=argparse.BooleanOptionalAction, default=None,
                   help="network call k sees the image flipped (none, left-right, up-down, both; k mod 4) and its "
                        "output flipped back, which averages the network's orientation bias over the run at no "
                        "extra cost; --no-flip_cycle: the paper's sampler (default: config.sampling.flip_cycle, "
                        "else off; ignored with --faithful)")
    p.add_argument("--nonnegative", action=argparse.BooleanOptionalAction, default=None,
                   help="clip the final magnitude estimate at zero before the last data consistency: the image "
                        "of the real-valued algorithm, the real part of the demodulated image with complex_mode "
                        "phase_ri or phase; --no-nonnegative for signed real images (default: "
                        "config.sampling.nonnegative, else off)")
    p.add_argument("--num_samples", type=int, default=1,
                   help="K posterior samples; K > 1 saves their mean as recon and their std")
    p.add_argument("--faithful", action="store_true",
                   help="reproduce the original's sampler quirks (batch-mean Langevin step, lambda over 2000, ...)")
    p.add_argument("--slice", default=None,
                   help="slice(s) of an .h5 or raw (.dat, .mrd) file: an index, 'all' or a range a:b (end "
                        "excluded). Default: the middle slice of one file, all slices of a folder or glob")
    p.add_argument("--coils", type=int, default=None, metavar="K",
                   help="SVD coil compression to K virtual coils before the reconstruction (bounds the time of "
                        "many-coil data; --coils 1 lets the single-coil scripts take multi-coil raw data)")
    p.add_argument("--average", type=int, default=None, metavar="I",
                   help="raw data (.dat, .mrd, MRD .h5): reconstruct average I only (default: the mean of all "
                        "averages)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results of the same name written with other settings (a volume run refuses "
                        "them otherwise; with the same settings it resumes)")
    p.add_argument("--quiet", action="store_true", help="no progress output (the result lines still print)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: $OMP_NUM_THREADS, else the idle cores shared among "
                        "the processes of a torchrun job)")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                   help="precision of the network body (its input and output layers, the sampler and data "
                        "consistency stay float32): auto (default: bf16 on CPUs with AVX512-BF16/AMX and on CUDA "
                        "devices with bf16, else fp32; fp32 with --faithful), bf16 or fp32 "
                        "(benchmarks/results/bf16_quality.md: equal PSNR on average, ~1.3x faster)")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="python config file with get_config()")
    p.add_argument("--ckpt", default=str(DEFAULT_CKPT), help="checkpoint (.pth) matching the config")
    p.add_argument("--seed", type=int, default=None, help="seed of the mask and the sampler (default: config.seed)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--skip_memory_check", action="store_true",
                   help="run even when the estimated memory of one network call exceeds what the device has")
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


def config_sampling(config, key: str, fallback: Any) -> Any:
    """``config.sampling.<key>``, else ``fallback``."""
    sampling_cfg = getattr(config, "sampling", None)
    if sampling_cfg is not None and key in sampling_cfg:
        return sampling_cfg[key]
    return fallback


def _setting(args: argparse.Namespace, config, flag: str, key: str, fallback: Any) -> Any:
    """A flag's value, else ``config.sampling.<key>``, else ``fallback``."""
    value = getattr(args, flag, None)
    return value if value is not None else config_sampling(config, key, fallback)


@dataclass(frozen=True)
class RunOptions:
    """What the CLI adds to the sampler settings: seed, device, the number of posterior samples."""
    seed: int
    device: str
    num_samples: int
    fast: bool


def _device(name: str | None) -> str:
    """The torch device to use (checked), default cuda when available."""
    import torch
    device = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a torch device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here (use --device cpu)")
    return device


def resolve(args: argparse.Namespace, config, *, coils: bool = False, **extra: Any):
    """Fill unset flags from the config and check them: (sampling.SamplerSettings, RunOptions).

    ``coils``: a multi-coil script, whose default N is ``config.sampling.N_multi_coil`` when the config
    has one (the paper's 500 for Algorithms 4-5 against 2000 for 2-3). ``extra``: more settings fields.
    """
    from score_mri import samplers as sampling
    _check_args(args)
    N_default = config_sampling(config, "N", config.model.num_scales)
    if coils:
        N_default = config_sampling(config, "N_multi_coil", N_default)
    N = args.N if args.N is not None else N_default
    m = _setting(args, config, "m", "n_steps_each", 1)
    snr = _setting(args, config, "snr", "snr", 0.16)
    t0 = _setting(args, config, "t0", "t0", None)
    fast = bool(args.fast) if args.fast is not None else (args.t0 is not None or bool(config_sampling(config, "fast", False)))
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
    flags = {k: getattr(args, k, None) for k in ("predictor", "corrector", "eta", "grid", "cg_iters", "gamma",
                                                  "noise_weighting", "complex_mode", "residual_smoothing",
                                                  "nonnegative", "finish_after_dc", "flip_cycle")}
    try:
        settings = sampling.SamplerSettings.from_config(
            config, coils=coils, N=int(N), snr=float(snr), n_steps=int(m), t0=float(t0) if fast else None,
            faithful=bool(args.faithful), **{k: v for k, v in flags.items() if v is not None},
            **({"t0_clean": None} if args.fast is False else {}), **extra)
        sampling.get_predictor(settings.predictor), sampling.get_corrector(settings.corrector)
    except ValueError as e:
        raise UserError(str(e)) from None
    seed = args.seed if args.seed is not None else int(getattr(config, "seed", 0))
    return settings, RunOptions(seed=int(seed), device=_device(args.device), num_samples=int(args.num_samples),
                                fast=fast)
