"""Algorithm 2 (real-valued score-POCS): reconstruct a magnitude image from undersampled single-coil k-space.

Example: python inference_real.py --data 001 --task retrospective --mask_type gaussian1d --acc_factor 4
"""
from score_mri.cli import common as ic
from score_mri.cli.scripts import REAL as ALGORITHM

if __name__ == "__main__":
    ic.main(ALGORITHM)
