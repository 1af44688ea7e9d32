"""SENSE sampler (beyond the paper): one complex image, A x = M F (S_c x), ESPIRiT maps from the measured
calibration region, one network call per step whatever the coil count, and data consistency by a few
conjugate-gradient steps on (A^H A + gamma I) x = A^H y + gamma x_hat.

Example: python inference_multi-coil_SENSE.py --data 001 --mask_type uniform1d --acc_factor 8 --cg_iters 5
"""
from score_mri.cli import common as ic
from score_mri.cli.scripts import SENSE_SCRIPT as ALGORITHM

if __name__ == "__main__":
    ic.main(ALGORITHM)
