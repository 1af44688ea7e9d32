"""Algorithm 3 (complex score-POCS): real and imaginary parts share the real-valued prior (single coil).

Example: python inference_single-coil.py --data 001 --mask_type gaussian1d --acc_factor 4
"""
from score_mri.cli import common as ic
from score_mri.cli.scripts import SINGLE_COIL as ALGORITHM

if __name__ == "__main__":
    ic.main(ALGORITHM)
