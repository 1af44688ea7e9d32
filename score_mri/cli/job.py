"""One command's job and the per-slice pipeline: :class:`Script`, :class:`Job`, :func:`prepare`,
:func:`reconstruct_problem` and the run key that marks a complete result (shared by single slices and volumes)."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from score_mri.cli import flags as cli
from score_mri.cli.flags import load_config
from score_mri.errors import UserError
from score_mri.io import outputs
from score_mri.io.readers import InputKind, Problem

N_PROGRESS = 6  # progress images saved per run (recon_progress/)

__all__ = ["UserError", "Script", "Context", "Job", "load_config", "prepare", "reconstruct_problem", "run_key",
           "existing_key", "root_of", "load_model", "check_problem"]


@dataclass
class Context:
    """What a script's operator hook sees: flags, config, resolved settings, the problem, the mask and the
    measured k-space."""
    args: argparse.Namespace
    config: Any
    settings: Any                    # the job's sampling.SamplerSettings (resolved once, in :func:`prepare`)
    problem: Problem
    root: Path                       # <save_dir>/<kind>, where the results will go
    mask: Any                        # [1, C, H, W] torch 0/1
    y: Any                           # [1, C, H, W] torch complex measured k-space
    extra_outputs: dict[str, Any] = field(default_factory=dict)  # relative path -> array or text
    record: dict[str, Any] = field(default_factory=dict)         # extra entries of the metrics JSON


@dataclass(frozen=True)
class Script:
    """What differs between the inference scripts."""
    sampler: str                                  # key of sampling.SAMPLERS ('real', 'complex', 'ssos', ...)
    kind: str                                     # output folder below save_dir ('real' gets /<task>)
    input: InputKind                              # what --data holds
    cartesian: type                               # operators.SingleCoilCartesian or MultiCoilCartesian
    description: str = ""
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None
    settings: Callable[[argparse.Namespace, Any], dict] | None = None   # extra SamplerSettings fields
    operator: Callable[[Context], Any] | None = None                   # default: cartesian(mask)


def check_problem(job: "Job", problem: Problem) -> None:
    """Refuse (UserError) a problem whose network call (on the padded grid) would not fit in memory."""
    if not job.args.skip_memory_check:
        from score_mri import recon
        from score_mri.physics.padding import padded_shape
        script, settings = job.script, job.settings
        coils = problem.image.shape[0] if script.input.coils else 1
        parts = 1 if script.sampler == "real" or settings.complex_mode == "phase" else 2  # phase: real state
        per_call = coils * parts if script.sampler in ("ssos", "hybrid") else parts
        grid = padded_shape(problem.image.shape[-2:], 2 ** (len(job.config.model.ch_mult) - 1))
        recon.check_memory(job.config, grid, min(per_call, settings.max_batch or per_call), job.opts.device)


@dataclass
class Job:
    """What every slice of one command shares: the script, flags, config and resolved settings."""
    script: Script
    args: argparse.Namespace
    config: Any
    settings: Any                   # sampling.SamplerSettings
    opts: cli.RunOptions


# flags that do not change a result: a rerun differing only in these resumes instead of being refused
_NOT_IN_KEY = {"data", "slice", "save_dir", "overwrite", "quiet", "threads", "device", "skip_memory_check", "precision"}


# flags whose unset value the config fills in: the key holds the resolved value (SamplerSettings field)
_RESOLVED = {"N": "N", "m": "n_steps", "snr": "snr", "predictor": "predictor", "corrector": "corrector",
             "t0": "t0", "eta": "eta", "grid": "grid", "cg_iters": "cg_iters", "gamma": "gamma",
             "complex_mode": "complex_mode", "m_steps": "m_steps", "residual_smoothing": "residual_smoothing",
             "nonnegative": "nonnegative", "noise_weighting": "noise_weighting",
             "finish_after_dc": "finish_after_dc", "flip_cycle": "flip_cycle"}
_WHOLE_HASH_BYTES = 64 << 20        # files up to this size are hashed whole; larger ones by size, mtime, ends
_FINGERPRINTS: dict[tuple, str] = {}


def fingerprint(path: str | Path) -> str | None:
    """The content identity of a file: SHA-256 of it (large files: of size, mtime and first/last MiB); None
    for a file that is not there."""
    import hashlib
    path = Path(path)
    if not path.is_file():
        return None
    st = path.stat()
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if cache_key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            if st.st_size <= _WHOLE_HASH_BYTES:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                h.update(f.read(1 << 20))
                f.seek(-(1 << 20), os.SEEK_END)
                h.update(f.read(1 << 20))
        _FINGERPRINTS[cache_key] = f"{st.st_size}:{h.hexdigest()[:20]}"
    return _FINGERPRINTS[cache_key]


def _input_files(path: Path) -> list[Path]:
    """The files an input reads: the file, a prospective image's ``<stem>_mask.npy``, BART's .cfl and .hdr."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".cfl", ".hdr"):
        return [p for p in (path.with_suffix(".cfl"), path.with_suffix(".hdr")) if p.is_file()]
    companions = [path.with_name(f"{path.stem}_mask.npy")] if suffix == ".npy" else []
    return [path] + [p for p in companions if p.is_file()]


def run_key(job: Job, path: Path, name: str) -> dict:
    """The settings a result was computed with (stored in its metrics JSON; equal keys = the same result):
    the flags as resolved (a default passed explicitly gives the same key) and the content identity of the
    input, config and checkpoint (a file replaced in place gives another key)."""
    key = {k: v for k, v in sorted(vars(job.args).items()) if k not in _NOT_IN_KEY}
    for flag, field_name in _RESOLVED.items():
        if flag in key:
            key[flag] = getattr(job.settings, field_name)
    key.update(seed=job.opts.seed, fast=job.opts.fast)
    path = Path(path)
    key.update(sampler=job.script.sampler, input=str(path.resolve()), name=name,
               config=str(Path(job.args.config).resolve()), ckpt=str(Path(job.args.ckpt).resolve()),
               input_id=[fingerprint(p) for p in _input_files(path)],
               config_id=fingerprint(job.args.config), ckpt_id=fingerprint(job.args.ckpt))
    return json.loads(json.dumps(key, default=str))  # as it reads back from the JSON (tuples -> lists, ...)


def existing_key(root: Path, name: str) -> dict | None:
    """The run key of a complete result ``name`` under ``root`` ({} for one without a key), else None."""
    path = root / f"{name}_metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("run_key", {})
    except (ValueError, AttributeError):
        return {}


def prepare(script: Script, argv: list[str] | None = None) -> Job:
    """Parse and check the flags, load the config and resolve the settings: the run's :class:`Job`."""
    parser = cli.build_parser(script.description)
    if script.extra_args is not None:
        script.extra_args(parser)
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    config = checked_config(args.config)
    if args.faithful:  # the original's sampler: its predictor and Langevin corrector unless named
        args.predictor = args.predictor or "reverse_diffusion"
        args.corrector = args.corrector or "langevin"
    extra = script.settings(args, config) if script.settings is not None else {}
    settings, opts = cli.resolve(args, config, coils=script.input.coils, **extra)
    _check_settings(script, args, settings)
    return Job(script=script, args=args, config=config, settings=settings, opts=opts)


# config fields every reconstruction reads: a get_config() without them is not a score-MRI config
_CONFIG_FIELDS = ("model.sigma_min", "model.sigma_max", "model.num_scales", "model.ch_mult", "data.image_size",
                  "training.continuous")


def _has_field(config: Any, dotted: str) -> bool:
    """Whether ``config.<dotted>`` can be read."""
    try:
        for part in dotted.split("."):
            config = getattr(config, part)
    except Exception:
        return False
    return True


def checked_config(path: str | Path) -> Any:
    """The config of ``--config``; a non-Python file, a failing get_config() or a non-config is a UserError."""
    path = Path(path)
    if path.is_file() and path.suffix != ".py":
        raise UserError(f"--config {path}: expected a python config file (.py) with get_config(), "
                        f"not a {path.suffix or 'suffix-less'} file")
    try:
        config = load_config(path)
    except UserError:
        raise
    except Exception as e:  # get_config() itself failed
        raise UserError(f"config {path}: get_config() failed: {type(e).__name__}: {e}".splitlines()[0]) from None
    missing = [f for f in _CONFIG_FIELDS if not _has_field(config, f)]
    if missing:
        raise UserError(f"config {path}: get_config() returned a {type(config).__name__} without "
                        f"{', '.join(missing)} (not a score-MRI config)")
    return config


def _check_settings(script: Script, args: argparse.Namespace, settings: Any) -> None:
    """Refuse (UserError) settings the sampler would accept but that cannot give a reconstruction."""
    from score_mri import samplers as sampling
    if script.sampler == "sense" and int(settings.cg_iters) < 1:
        raise UserError(f"--cg_iters must be >= 1 for the SENSE sampler (its only data consistency), "
                        f"got {settings.cg_iters}")
    if settings.faithful and getattr(sampling.get_predictor(settings.predictor), "projects", False):
        raise UserError(f"--faithful reproduces the original's SDE samplers; predictor {settings.predictor} "
                        f"is not one of them (use e.g. --predictor reverse_diffusion)")


def root_of(job: Job, task: str) -> tuple[str, Path]:
    """(kind, <save_dir>/<kind>) of a problem with this task."""
    kind = f"{job.script.kind}/{task}" if job.script.input.real_valued else job.script.kind
    return kind, Path(job.args.save_dir) / kind


def load_model(job: Job):
    """The score model of the job's config and checkpoint on its device (loaded once per command)."""
    from score_mri import recon
    precision = getattr(job.args, "precision", "auto")
    if precision == "auto" and job.settings.faithful:  # the original's numerics: float32 throughout
        precision = "fp32"
    return recon.load_model(job.config, job.args.ckpt, job.opts.device, precision)


def reconstruct_problem(job: Job, model, problem: Problem, *, tag: str = "") -> dict:
    """The per-slice pipeline: measurements, operator, sampler, result files; returns the metrics record."""
    import torch

    from score_mri.cli import progress as progress_mod
    from score_mri import recon
    from score_mri import utils
    script, args, settings, opts = job.script, job.args, job.settings, job.opts
    kind, root = root_of(job, problem.task)
    check_problem(job, problem)
    device = next(model.parameters()).device
    image = torch.from_numpy(problem.image)[None].to(device)                   # [1, C, H, W]
    if problem.mask is None:
        mask = recon.simulate_mask(tuple(image.shape), args.mask_type, args.acc_factor, args.center_fraction,
                                   opts.seed, device, faithful=settings.faithful)
    else:
        mask = torch.from_numpy(problem.mask).to(device).expand(image.shape).contiguous()
    cart = script.cartesian(mask)
    if problem.kspace is not None:  # measured k-space, taken as it is (in the operator's units)
        y = cart.measured(torch.from_numpy(problem.kspace)[None].to(device))  # [1, C, H, W]
    else:                           # retrospective, or a k-space-free input: simulated from the image
        y = cart.A(image.to(torch.complex64))                                  # [1, C, H, W]
    x_zf = cart.zero_filled(y)                                                 # [1, C, H, W]
    ctx = Context(args=args, config=job.config, settings=settings, problem=problem, root=root, mask=mask, y=y)
    op = script.operator(ctx) if script.operator is not None else cart

    images: dict = {}
    keep = set(np.linspace(0, settings.N - 1, N_PROGRESS).round().astype(int).tolist())
    bar = progress_mod.Progress(settings.N * opts.num_samples, f"{tag}{problem.name}", quiet=args.quiet)
    done = [0]

    def callback(i: int, n: int, x) -> None:
        """Advance the progress report; keep a handful of intermediate images of the first sample."""
        bar.update()
        done[0] += 1
        if done[0] <= n and i in keep:
            images[i] = outputs.magnitude(recon.to_image(x, script.input.real_valued)) * problem.scale

    try:
        rec = recon.reconstruct(model, script.sampler, op, y, settings, num_samples=opts.num_samples,
                                generator=torch.Generator(device=device).manual_seed(opts.seed),
                                callback=callback, inverse_scaler=utils.get_data_inverse_scaler(job.config))
    finally:
        bar.close()
    ctx.record.update(threads=torch.get_num_threads(), precision=getattr(model, "inference_precision", "fp32"),
                      run_key=run_key(job, problem.source, problem.name), **_sampler_report(rec.info, problem.scale))
    return _save(args, settings, opts, problem, kind, root, rec, ctx,
                 recon.to_image(x_zf, script.input.real_valued),
                 recon.to_image(image, script.input.real_valued) if problem.task == "retrospective" else None,
                 mask[0, 0].cpu().numpy().astype(np.float32), images)


def _sampler_report(info: dict, scale: float) -> dict:
    """The record entries of what the sampler decided (``Reconstruction.info``): the noise estimate in the
    input's units, the relative noise and the start taken."""
    if "noise_std" not in info:
        return {}
    return {"noise_std": info["noise_std"] * scale, "relative_noise": round(info["relative_noise"], 5),
            "t0": info["t0"]}


def _save(args, settings, opts, problem: Problem, kind: str, root: Path, rec, ctx: Context, x_zf: np.ndarray,
          label: np.ndarray | None, mask2d: np.ndarray, progress: dict) -> dict:
    """The metrics record and every output file, in the input's units."""
    name, s = problem.name, problem.scale
    zf_m, recon_m = outputs.metrics_of(label, x_zf), outputs.metrics_of(label, rec.image)
    record = {
        "name": name, "input": str(problem.source.resolve()), "kind": kind, "task": problem.task,
        "zero_filled": zf_m, "recon": recon_m, "seconds": round(rec.seconds, 3), "network_calls": rec.network_calls,
        "N": settings.N, "m": settings.n_steps, "snr": settings.snr, "predictor": str(settings.predictor),
        "corrector": str(settings.corrector), "fast": opts.fast, "t0": settings.t0, "seed": opts.seed,
        "num_samples": opts.num_samples, "faithful": settings.faithful,
        "flip_cycle": settings.flips_network_input,
        "mask_type": args.mask_type if problem.task == "retrospective" else "given",
        "acc_factor": args.acc_factor if problem.task == "retrospective" else None,
        "center_fraction": args.center_fraction if problem.task == "retrospective" else None,
        "sampled_fraction": float(mask2d.mean()), "shape": list(problem.image.shape),
        "scale": s, "config": str(Path(args.config).resolve()), "ckpt": str(Path(args.ckpt).resolve()),
        "device": opts.device, **ctx.record,
    }
    arrays = {"input": x_zf * s, "mask": mask2d, "label": None if label is None else label * s,
              "recon": rec.image * s, "std": None if rec.std is None else rec.std * s}
    outputs.save_results(root, name, arrays, progress, ctx.extra_outputs, record,
                         f"{name} ({kind}, N={settings.N})")
    if recon_m is not None:
        summary = (f"{name}: ZF {zf_m['psnr']:.1f} dB / {zf_m['ssim']:.2f} -> recon {recon_m['psnr']:.1f} dB / "
                   f"{recon_m['ssim']:.2f} SSIM")
    else:
        summary = f"{name}: recon (no label)"
    noise = record.get("relative_noise")
    start = "" if noise is None else (f"; noise {100 * noise:.2g} % of the peak, start "
                                      f"{'t = 1' if record.get('t0') is None else 't0 %g' % record['t0']}")
    print(f"{summary} in {rec.seconds:.0f} s ({rec.network_calls} network calls{start}) -> {root}")
    return record
