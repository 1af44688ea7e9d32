"""SENSE sampler (beyond the paper): one complex image, A x = M F (S_c x), ESPIRiT maps from the measured
calibration region, one network call per step whatever the coil count, and data consistency by a few
conjugate-gradient steps on (A^H A + gamma I) x = A^H y + gamma x_hat.

Example: python inference_multi-coil_SENSE.py --data 001 --mask_type uniform1d --acc_factor 8 --cg_iters 5
"""
import cli
import inference_common as ic
from io_utils import InputKind
from operators import SENSE, MultiCoilCartesian
from sens_maps import coil_maps


def add_args(parser) -> None:
    """SENSE-only flags."""
    parser.add_argument("--espirit_from_full", action="store_true",
                        help="calibrate ESPIRiT on the FULLY sampled k-space (leaks the ground truth; "
                             "retrospective only). Default: the measured (masked) k-space")


def operator(ctx: ic.Context) -> SENSE:
    """SENSE operator with ESPIRiT maps from the measured calibration region."""
    settings, _ = cli.resolve(ctx.args, ctx.config, coils=True)
    ctx.record.update(espirit_from_full=ctx.args.espirit_from_full, complex_mode=settings.complex_mode,
                      cg_iters=settings.cg_iters, gamma=settings.gamma)
    return SENSE(coil_maps(ctx, ctx.args.espirit_from_full), ctx.mask)


ALGORITHM = ic.Script(sampler="sense", kind="multi-coil/SENSE",
                      input=InputKind("multi-coil", coils=True, real_valued=False), cartesian=MultiCoilCartesian,
                      description=__doc__, extra_args=add_args, operator=operator)

if __name__ == "__main__":
    ic.main(ALGORITHM)
