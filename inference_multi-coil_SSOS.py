"""Algorithm 4 (multi-coil, sum of root-sum-of-squares): each coil image is reconstructed with the prior and
per-coil data consistency; the result is the root-sum-of-squares over coils.

Example: python inference_multi-coil_SSOS.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
import inference_common as ic
from io_utils import InputKind
from operators import MultiCoilCartesian

ALGORITHM = ic.Script(sampler="ssos", kind="multi-coil/SSOS",
                      input=InputKind("multi-coil", coils=True, real_valued=False),
                      cartesian=MultiCoilCartesian, description=__doc__)

if __name__ == "__main__":
    ic.main(ALGORITHM)
