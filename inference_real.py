"""Algorithm 2 (real-valued score-POCS): reconstruct a magnitude image from undersampled single-coil k-space.

Example: python inference_real.py --data 001 --task retrospective --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
from io_utils import InputKind
from operators import SingleCoilCartesian

ALGORITHM = ic.Script(sampler="real", kind="real", input=InputKind("real", coils=False, real_valued=True),
                      cartesian=SingleCoilCartesian, description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
