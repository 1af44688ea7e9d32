"""Algorithm 3 (complex score-POCS): real and imaginary parts share the real-valued prior (single coil).

Example: python inference_single-coil.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
import sampling
from utils import fft2, ifft2


def build(ctx: ic.Context):
    """Algorithm 3: corrector then predictor on the real and imaginary parts, complex data consistency."""
    fn = sampling.get_pc_fouriercs_RI(ctx.sde, ctx.predictor, ctx.corrector, ctx.inverse_scaler,
                                      **ctx.sampler_kwargs(sampling.get_pc_fouriercs_RI))
    return lambda model, x_zf: fn(model, x_zf, ctx.mask, Fy=ctx.Fy)


ALGORITHM = ic.Algorithm(family="single-coil", kind="single-coil", fft=fft2, ifft=ifft2, build=build,
                         description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
