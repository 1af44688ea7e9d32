"""Samplers: the predictor-corrector loop, its steps, the paper's algorithms, the SENSE sampler, the one sampler
table and the original's builders."""
from __future__ import annotations

from score_mri.samplers.algorithms import COMPLEX, HYBRID, REAL, SSOS, Algorithm, run_algorithm, sample_real
from score_mri.samplers.builders import (get_pc_fouriercs_fast, get_pc_fouriercs_RI, get_pc_fouriercs_RI_coil_SENSE,
                                         get_pc_fouriercs_RI_PI_SSOS, get_pc_sampler, get_sampling_fn)
from score_mri.samplers.pc_loop import Callback, Result, SamplerSettings
from score_mri.samplers.predictors import (AncestralSamplingPredictor, Corrector, EulerMaruyamaPredictor,
                                           LangevinCorrector, NoneCorrector, NonePredictor, Predictor,
                                           ReverseDiffusionPredictor, get_corrector, get_predictor,
                                           register_corrector, register_predictor)
from score_mri.samplers.sense import sample_complex, sample_hybrid, sample_sense, sample_ssos
from score_mri.samplers.table import SAMPLERS, get_sampler

__all__ = [
    "Predictor", "Corrector", "ReverseDiffusionPredictor", "AncestralSamplingPredictor", "EulerMaruyamaPredictor",
    "NonePredictor", "LangevinCorrector", "NoneCorrector", "register_predictor", "register_corrector",
    "get_predictor", "get_corrector", "SamplerSettings", "Result", "Callback", "Algorithm", "run_algorithm",
    "REAL", "COMPLEX", "SSOS", "HYBRID", "SAMPLERS", "get_sampler",
    "sample_real", "sample_complex", "sample_ssos", "sample_hybrid", "sample_sense", "get_sampling_fn",
    "get_pc_sampler", "get_pc_fouriercs_fast", "get_pc_fouriercs_RI", "get_pc_fouriercs_RI_PI_SSOS",
    "get_pc_fouriercs_RI_coil_SENSE",
]
