"""Algorithm 4 (multi-coil, sum of root-sum-of-squares): each coil image is reconstructed with the prior and
per-coil data consistency; the result is the root-sum-of-squares over coils.

Example: python inference_multi-coil_SSOS.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
import sampling
from utils import fft2_m, ifft2_m


def build(ctx: ic.Context):
    """Algorithm 4: predictor then corrector per coil (real, imag), per-coil data consistency."""
    fn = sampling.get_pc_fouriercs_RI_PI_SSOS(ctx.sde, ctx.predictor, ctx.corrector, ctx.inverse_scaler,
                                              mask=ctx.mask,
                                              **ctx.sampler_kwargs(sampling.get_pc_fouriercs_RI_PI_SSOS))
    return lambda model, x_zf: fn(model, x_zf, y=ctx.Fy)


ALGORITHM = ic.Algorithm(family="multi-coil", kind="multi-coil/SSOS", fft=fft2_m, ifft=ifft2_m, build=build,
                         description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
