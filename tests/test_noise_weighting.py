"""Noise-weighted SENSE data consistency: the noise estimate, the MAP weight, and their wiring into the loop."""
from __future__ import annotations

import math

import pytest
import torch

import sampling
from score_mri.physics import noise
from score_mri.physics.operators import SENSE, SingleCoilCartesian
from score_mri.samplers.pc_loop import time_grid
from score_mri.samplers import sense
from score_mri.samplers.sense import SenseCG
from test_sampling import ToyGaussianScore, coil_maps, column_mask, smooth_image

SIZE = 64


def noisy_kspace(std: float, n_coils: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, SENSE]:
    """(y, mask, op): a smooth image seen by toy coils through a column mask, plus complex white noise of
    standard deviation ``std`` per k-space sample."""
    g = torch.Generator().manual_seed(seed)
    mask = column_mask(SIZE, SIZE, seed)
    op = SENSE(coil_maps(n_coils, SIZE, SIZE), mask)
    x = smooth_image(SIZE, SIZE).to(torch.complex64)
    n = torch.complex(torch.randn(1, n_coils, SIZE, SIZE, generator=g),
                      torch.randn(1, n_coils, SIZE, SIZE, generator=g)) * (std / math.sqrt(2))
    return op.A(x) + mask * n, mask, op


@pytest.mark.parametrize("std", [0.005, 0.02, 0.1])
def test_noise_estimate_recovers_white_noise_on_a_smooth_image(std):
    y, mask, _ = noisy_kspace(std)
    assert float(noise.estimate_noise_std(y, mask)[0]) == pytest.approx(std, rel=0.15)


def test_noise_estimate_is_small_on_noise_free_data_and_scales_with_the_data():
    y, mask, _ = noisy_kspace(0.0)
    clean = float(noise.estimate_noise_std(y, mask)[0])
    assert clean < 0.25 * float(noise.estimate_noise_std(noisy_kspace(0.005)[0], mask)[0])
    y, mask, _ = noisy_kspace(0.02)
    torch.testing.assert_close(noise.estimate_noise_std(7.0 * y, mask), 7.0 * noise.estimate_noise_std(y, mask))


def test_noise_estimate_per_batch_item_and_empty_mask():
    y1, mask, _ = noisy_kspace(0.01, seed=1)
    y2, _, _ = noisy_kspace(0.04, seed=1)
    est = noise.estimate_noise_std(torch.cat([y1, y2]), mask)
    assert est.shape == (2,) and est[1] > 3 * est[0]
    assert float(noise.estimate_noise_std(y1, torch.zeros_like(mask))[0]) == 0.0
    with pytest.raises(ValueError):
        noise.estimate_noise_std(y1, mask, fraction=0.0)


def test_map_weight_is_the_variance_ratio_with_gamma_as_floor():
    s = torch.tensor([0.0, 0.02, 0.1])
    w = noise.map_weight(0.1, s, 0.05)
    assert w.shape == (3, 1, 1, 1)
    torch.testing.assert_close(w.flatten(), torch.tensor([0.1, 0.16, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        noise.map_weight(0.1, s, 0.0)


def test_noise_weighted_solve_is_the_map_estimate():
    """Converged, the weighted CG step minimises ||A x - y||^2 / s^2 + ||x - x_hat||^2 / sigma^2."""
    y, mask, op = noisy_kspace(0.05)
    s, sigma = noise.estimate_noise_std(y, mask), 0.02
    op = SENSE(op.sens.to(torch.complex128), mask.double())
    y = y.to(torch.complex128)
    cg = SenseCG(op, 0.1, 300, noise_std=s)
    at = cg.at_noise_level(sigma)
    assert at is not cg and cg.weight == 0.1                                 # the original keeps its gamma
    x_hat = smooth_image(SIZE, SIZE).to(torch.complex128) * 0.9
    x = at.project(x_hat, y)
    w = float(s[0]) ** 2 / sigma ** 2
    assert w > 1.0                                                           # the noise dominates gamma here
    grad = (op.A_H(op.A(x) - y) + w * (x - x_hat)) * at.support             # the MAP objective's gradient
    assert float(torch.linalg.vector_norm(grad)) < 1e-6 * float(torch.linalg.vector_norm(op.A_H(y)))
    assert SenseCG(op, 0.1, 5).at_noise_level(sigma).weight == 0.1          # no noise level: gamma fixed


class RecordingCartesian(SingleCoilCartesian):
    """A single-coil operator that records the noise levels the loop hands it."""

    def __init__(self, mask: torch.Tensor):
        super().__init__(mask)
        self.levels: list[float] = []

    def at_noise_level(self, sigma: float):
        self.levels.append(sigma)
        return self

    def restrict(self, sl: slice):
        return self


@pytest.mark.parametrize("predictor,corrector", [("dds", "none"), ("reverse_diffusion", "langevin")])
def test_loop_hands_each_data_consistency_the_noise_level_of_its_state(predictor, corrector):
    """Corrector then predictor (Algorithm 3): the DC after the corrector gets sigma(t_i); after a predictor that
    moves the state to t_{i+1}, sigma(t_{i+1}) (the last step keeps sigma(t_i)); dds projects its clean
    estimate of time t_i, so it gets sigma(t_i)."""
    mu = smooth_image(16, 16)
    op = RecordingCartesian(column_mask(16, 16, 0))
    y = op.A(mu.to(torch.complex64))
    s = sampling.SamplerSettings(N=10, predictor=predictor, corrector=corrector)
    sampling.get_sampler("complex")(ToyGaussianScore(mu, 0.1), op, y, s, generator=torch.Generator().manual_seed(0))
    sde = s.make_sde()
    t = time_grid(s, torch.device("cpu"))                                   # dds: a lowered start
    levels = sde.marginal_prob(torch.zeros_like(t), t)[1].tolist()
    after_predictor = levels if predictor == "dds" else levels[1:] + levels[-1:]
    expected = [v for pair in zip(levels, after_predictor) for v in pair]   # per step: corrector, predictor
    assert len(op.levels) == 2 * s.N                                        # every DC of every step gets one
    assert op.levels == pytest.approx(expected, rel=1e-5)


def test_setting_is_checked_read_from_the_config_and_off_by_default():
    assert sampling.SamplerSettings().noise_weighting == "off"
    with pytest.raises(ValueError, match="noise_weighting"):
        sampling.SamplerSettings(noise_weighting="on")
    from score_mri.config import load_config
    config = load_config("configs/ve/colin27_ncsnpp_small.py")
    assert sampling.SamplerSettings.from_config(config).noise_weighting == "auto"


def test_auto_weighting_leaves_noise_free_sense_unchanged_and_changes_noisy_sense():
    """Noise-free data: the estimate is far below gamma * sigma_min^2, so the result is bit-identical."""
    model = ToyGaussianScore(smooth_image(SIZE, SIZE), 0.1)
    base = sampling.SamplerSettings(N=4, predictor="dds", corrector="none", complex_mode="phase_ri")
    for std, same in ((0.0, True), (0.05, False)):
        y, mask, op = noisy_kspace(std)
        runs = [sampling.get_sampler("sense")(model, op, y, base.replace(noise_weighting=m),
                                              generator=torch.Generator().manual_seed(0)).x for m in ("off", "auto")]
        assert torch.equal(runs[0], runs[1]) == same


def test_clean_data_start_nearer_the_data_noisy_data_from_noise():
    base = sampling.SamplerSettings(N=4, predictor="dds", corrector="none", noise_weighting="auto", t0_clean=0.65)
    for std, t0 in ((0.0, 0.65), (0.05, None)):
        y, mask, op = noisy_kspace(std)
        rel = sense.relative_noise(op, y, sense.measurement_noise(op, y, base))
        assert (rel < sense.CLEAN_NOISE) == (t0 is not None)
        assert sense.start_settings(base, rel).t0 == t0
        assert sense.start_settings(base.replace(t0=0.9), rel).t0 == 0.9             # an asked-for start wins
    assert sense.measurement_noise(op, y, base.replace(noise_weighting="off")) is None
    assert sense.start_settings(base, None).t0 is None                                # no estimate: from noise
    with pytest.raises(ValueError, match="t0_clean"):
        sampling.SamplerSettings(t0_clean=1.5)


def test_cli_reads_the_clean_start_from_the_config_and_no_fast_turns_it_off():
    from score_mri.cli import flags
    from score_mri.config import load_config
    config = load_config("configs/ve/colin27_ncsnpp_small.py")
    for argv, expected in (([], 0.65), (["--no-fast"], None), (["--t0", "0.8"], 0.65)):
        args = flags.build_parser("t").parse_args(["--data", "-", *argv])
        settings = flags.resolve(args, config)[0]
        assert settings.t0_clean == expected and settings.noise_weighting == "auto"


def test_zero_padded_kspace_is_not_read_as_clean_data():
    """Measured-but-zero samples (a zero-padded readout under a column mask) do not drag the estimate to 0."""
    y, mask, _ = noisy_kspace(0.02)
    padded = y.clone()
    padded[..., :SIZE // 4, :] = 0                          # the outer quarter of the rows: zero-padded
    padded[..., -SIZE // 4:, :] = 0
    assert float(noise.estimate_noise_std(padded, mask)[0]) == pytest.approx(0.02, rel=0.2)
