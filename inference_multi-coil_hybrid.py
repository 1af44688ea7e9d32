"""Algorithm 5 (hybrid): Algorithm 4 plus a SENSE Kaczmarz step x <- x + lambda A^H (y - A x) every m_steps
iterations, with ESPIRiT coil maps calibrated on the measured k-space centre (sigpy EspiritCalib defaults).

Example: python inference_multi-coil_hybrid.py --data 001 --mask_type gaussian1d --acc_factor 4 --m_steps 10
"""
from score_mri.cli import common as ic
from score_mri.cli.scripts import HYBRID as ALGORITHM

if __name__ == "__main__":
    ic.main(ALGORITHM)
