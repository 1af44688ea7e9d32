"""Algorithm 2 (real-valued score-POCS): reconstruct a magnitude image from undersampled single-coil k-space.

Example: python inference_real.py --data 001 --task retrospective --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
import sampling
from utils import fft2, ifft2


def build(ctx: ic.Context):
    """Algorithm 2: corrector, real data consistency, predictor, data consistency (original shifted FFT)."""
    fn = sampling.get_pc_fouriercs_fast(ctx.sde, ctx.predictor, ctx.corrector, ctx.inverse_scaler,
                                        **ctx.sampler_kwargs(sampling.get_pc_fouriercs_fast))
    return lambda model, x_zf: fn(model, x_zf, ctx.mask, Fy=ctx.Fy)


ALGORITHM = ic.Algorithm(family="real", kind="real", fft=fft2, ifft=ifft2, build=build, real_valued=True,
                         description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
