"""Algorithm 5 (hybrid): Algorithm 4 plus a SENSE Kaczmarz step x <- x + lambda A^H (y - A x) every m_steps
iterations, with ESPIRiT coil maps calibrated on the measured k-space centre (sigpy EspiritCalib defaults).

Example: python inference_multi-coil_hybrid.py --data 001 --mask_type gaussian1d --acc_factor 4 --m_steps 10
"""
import inference_common as ic
from cli import config_sampling, finite_float
from io_utils import InputKind
from operators import SENSE, MultiCoilCartesian
from sens_maps import coil_maps
from utils import lambda_schedule_linear


def add_args(parser) -> None:
    """Hybrid-only flags."""
    parser.add_argument("--m_steps", type=int, default=None,
                        help="Kaczmarz (SENSE) step every m_steps iterations (default: config.sampling.m_steps)")
    parser.add_argument("--lamb_start", type=finite_float, default=1.0, help="Kaczmarz step size at the first iteration")
    parser.add_argument("--lamb_end", type=finite_float, default=0.2, help="Kaczmarz step size at the last iteration")
    parser.add_argument("--espirit_from_full", action="store_true",
                        help="calibrate ESPIRiT on the FULLY sampled k-space, as the original did (leaks the "
                             "ground truth; retrospective only). Default: the measured (masked) k-space")


def settings(args, config) -> dict:
    """m_steps and the lambda schedule (over the original's 2000 iterations, stretched over N unless faithful)."""
    m_steps = args.m_steps if args.m_steps is not None else int(config_sampling(config, "m_steps", 50))
    if m_steps < 1:
        raise ic.UserError(f"--m_steps must be >= 1, got {m_steps}")
    return {"m_steps": m_steps, "lamb_schedule": lambda_schedule_linear(args.lamb_start, args.lamb_end)}


def operator(ctx: ic.Context) -> SENSE:
    """SENSE operator with ESPIRiT maps from the measured calibration region."""
    ctx.record.update(m_steps=settings(ctx.args, ctx.config)["m_steps"], lamb_start=ctx.args.lamb_start,
                      lamb_end=ctx.args.lamb_end, espirit_from_full=ctx.args.espirit_from_full)
    return SENSE(coil_maps(ctx, ctx.args.espirit_from_full), ctx.mask)


ALGORITHM = ic.Script(sampler="hybrid", kind="multi-coil/hybrid",
                      input=InputKind("multi-coil", coils=True, real_valued=False), cartesian=MultiCoilCartesian,
                      description=__doc__, extra_args=add_args, settings=settings, operator=operator)

if __name__ == "__main__":
    ic.main(ALGORITHM)
