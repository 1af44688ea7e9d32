"""Algorithm 4 (multi-coil, sum of root-sum-of-squares): each coil image is reconstructed with the prior and
per-coil data consistency; the result is the root-sum-of-squares over coils.

Example: python inference_multi-coil_SSOS.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
from score_mri.cli import common as ic
from score_mri.cli.scripts import SSOS as ALGORITHM

if __name__ == "__main__":
    ic.main(ALGORITHM)
