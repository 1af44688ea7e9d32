"""Algorithm 3 (complex score-POCS): real and imaginary parts share the real-valued prior (single coil).

Example: python inference_single-coil.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
from io_utils import InputKind
from operators import SingleCoilCartesian

ALGORITHM = ic.Script(sampler="complex", kind="single-coil",
                      input=InputKind("single-coil", coils=False, real_valued=False),
                      cartesian=SingleCoilCartesian, description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
