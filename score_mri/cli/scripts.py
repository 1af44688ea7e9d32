"""The five reconstruction commands as :class:`~score_mri.cli.common.Script` records, and their entry points.

Each top-level ``inference_*.py`` file and each console command (``score-mri-real``, ...) runs one record here.
"""
from __future__ import annotations

import argparse
import warnings

import torch

from score_mri.cli import common as ic
from score_mri.cli.flags import config_sampling, finite_float
from score_mri.io.raw import check_maps
from score_mri.io.maps import load_maps
from score_mri.io.readers import InputKind
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
from score_mri.physics.sens_maps import coil_maps, unit_peak
from score_mri.utils import lambda_schedule_linear

__all__ = ["REAL", "SINGLE_COIL", "SSOS", "HYBRID", "SENSE_SCRIPT", "SCRIPTS", "real", "single_coil", "ssos",
           "hybrid", "sense"]

_REAL_DOC = """Algorithm 2 (real-valued score-POCS): reconstruct a magnitude image from undersampled single-coil k-space.

Example: python inference_real.py --data 001 --task retrospective --mask_type gaussian1d --acc_factor 4
"""
_SINGLE_COIL_DOC = """Algorithm 3 (complex score-POCS): real and imaginary parts share the real-valued prior (single coil).

Example: python inference_single-coil.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
_SSOS_DOC = """Algorithm 4 (multi-coil, sum of root-sum-of-squares): each coil image is reconstructed with the prior and
per-coil data consistency; the result is the root-sum-of-squares over coils.

Example: python inference_multi-coil_SSOS.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
_HYBRID_DOC = """Algorithm 5 (hybrid): Algorithm 4 plus a SENSE Kaczmarz step x <- x + lambda A^H (y - A x) every m_steps
iterations, with ESPIRiT coil maps calibrated on the measured k-space centre (sigpy EspiritCalib defaults).

Example: python inference_multi-coil_hybrid.py --data 001 --mask_type gaussian1d --acc_factor 4 --m_steps 10
"""
_SENSE_DOC = """SENSE sampler (beyond the paper): one complex image, A x = M F (S_c x), ESPIRiT maps from the measured
calibration region, one network call per step whatever the coil count, and data consistency by a few
conjugate-gradient steps on (A^H A + gamma I) x = A^H y + gamma x_hat. With --noise_weighting auto (the
embedded default) gamma grows as (noise / sigma)^2 at the late noise levels sigma, the noise estimated from the
outermost measured k-space; clean data start at config.sampling.t0_clean (--no-fast: from noise).

Example: python inference_multi-coil_SENSE.py --data 001 --mask_type uniform1d --acc_factor 8 --cg_iters 5
"""

_ESPIRIT_HELP = ("calibrate ESPIRiT on the FULLY sampled k-space, as the original did (leaks the ground truth; "
                 "retrospective only). Default: the measured (masked) k-space")
_MAPS_HELP = ("your own coil sensitivity maps instead of ESPIRiT: .npy [coils, H, W] complex or a BART .cfl "
              "(e.g. from 'bart ecalib'; the first set of maps); needed when the mask has no calibration region")


def _hybrid_args(parser: argparse.ArgumentParser) -> None:
    """Hybrid-only flags."""
    parser.add_argument("--m_steps", type=int, default=None,
                        help="Kaczmarz (SENSE) step every m_steps iterations (default: config.sampling.m_steps)")
    parser.add_argument("--lamb_start", type=finite_float, default=1.0, help="Kaczmarz step size at the first iteration")
    parser.add_argument("--lamb_end", type=finite_float, default=0.2, help="Kaczmarz step size at the last iteration")
    _sense_args(parser)  # the maps flags, as SENSE's


def _hybrid_settings(args: argparse.Namespace, config) -> dict:
    """m_steps and the lambda schedule (over the original's 2000 iterations, stretched over N unless faithful)."""
    m_steps = args.m_steps if args.m_steps is not None else int(config_sampling(config, "m_steps", 50))
    if m_steps < 1:
        raise ic.UserError(f"--m_steps must be >= 1, got {m_steps}")
    return {"m_steps": m_steps, "lamb_schedule": lambda_schedule_linear(args.lamb_start, args.lamb_end)}


def _maps(ctx: ic.Context) -> torch.Tensor:
    """ESPIRiT maps [1, C, H, W] of the run (or the ``--maps`` file), refused (one line, exit 2) when their coil
    count is not the data's."""
    if ctx.args.maps is not None:
        if ctx.args.espirit_from_full:
            raise ic.UserError("--maps and --espirit_from_full exclude each other")
        maps = torch.from_numpy(load_maps(ctx.args.maps, int(ctx.y.shape[1]), tuple(ctx.y.shape[-2:])))[None]
        maps, factor = unit_peak(maps.to(ctx.y.device))
        if factor != 1.0:
            warnings.warn(f"--maps {ctx.args.maps}: root-sum-of-squares peaks at {factor:.4g}; divided by it so "
                          f"that it peaks at 1 like ESPIRiT's maps (the image keeps the coil-combined intensity)")
            ctx.record["maps_divided_by"] = factor
    else:
        maps = coil_maps(ctx, ctx.args.espirit_from_full)
    check_maps(ctx.y[0], maps[0])
    return maps


def _hybrid_operator(ctx: ic.Context) -> SENSE:
    """SENSE operator with ESPIRiT maps from the measured calibration region (Algorithm 5)."""
    ctx.record.update(m_steps=ctx.settings.m_steps, lamb_start=ctx.args.lamb_start, lamb_end=ctx.args.lamb_end,
                      espirit_from_full=ctx.args.espirit_from_full)
    return SENSE(_maps(ctx), ctx.mask)


def _sense_args(parser: argparse.ArgumentParser) -> None:
    """The coil-maps flags (SENSE; hybrid adds them too)."""
    parser.add_argument("--espirit_from_full", action="store_true", help=_ESPIRIT_HELP)
    parser.add_argument("--maps", default=None, metavar="FILE", help=_MAPS_HELP)


def _sense_operator(ctx: ic.Context) -> SENSE:
    """SENSE operator with ESPIRiT maps from the measured calibration region (SENSE sampler)."""
    settings = ctx.settings
    ctx.record.update(espirit_from_full=ctx.args.espirit_from_full, complex_mode=settings.complex_mode,
                      cg_iters=settings.cg_iters, gamma=settings.gamma, noise_weighting=settings.noise_weighting)
    return SENSE(_maps(ctx), ctx.mask)


REAL = ic.Script(sampler="real", kind="real", input=InputKind("real", coils=False, real_valued=True),
                 cartesian=SingleCoilCartesian, description=_REAL_DOC)
SINGLE_COIL = ic.Script(sampler="complex", kind="single-coil",
                        input=InputKind("single-coil", coils=False, real_valued=False),
                        cartesian=SingleCoilCartesian, description=_SINGLE_COIL_DOC)
SSOS = ic.Script(sampler="ssos", kind="multi-coil/SSOS", input=InputKind("multi-coil", coils=True, real_valued=False),
                 cartesian=MultiCoilCartesian, description=_SSOS_DOC)
HYBRID = ic.Script(sampler="hybrid", kind="multi-coil/hybrid",
                   input=InputKind("multi-coil", coils=True, real_valued=False), cartesian=MultiCoilCartesian,
                   description=_HYBRID_DOC, extra_args=_hybrid_args, settings=_hybrid_settings,
                   operator=_hybrid_operator)
SENSE_SCRIPT = ic.Script(sampler="sense", kind="multi-coil/SENSE",
                         input=InputKind("multi-coil", coils=True, real_valued=False), cartesian=MultiCoilCartesian,
                         description=_SENSE_DOC, extra_args=_sense_args, operator=_sense_operator)
SCRIPTS = {"real": REAL, "single-coil": SINGLE_COIL, "ssos": SSOS, "hybrid": HYBRID, "sense": SENSE_SCRIPT}


def real() -> None:
    """Console command ``score-mri-real`` (Algorithm 2)."""
    ic.main(REAL)


def single_coil() -> None:
    """Console command ``score-mri-single-coil`` (Algorithm 3)."""
    ic.main(SINGLE_COIL)


def ssos() -> None:
    """Console command ``score-mri-ssos`` (Algorithm 4)."""
    ic.main(SSOS)


def hybrid() -> None:
    """Console command ``score-mri-hybrid`` (Algorithm 5)."""
    ic.main(HYBRID)


def sense() -> None:
    """Console command ``score-mri-sense`` (the SENSE sampler)."""
    ic.main(SENSE_SCRIPT)
