"""``physics.phase.smooth_phase``: the seeded smooth random phase of the simulated complex images."""
from __future__ import annotations

import numpy as np
import pytest

from score_mri.physics.phase import smooth_phase

SEEDS = range(10)


def max_step(phi: np.ndarray) -> float:
    """Largest phase difference between neighbouring pixels (rows or columns)."""
    return float(max(np.abs(np.diff(phi, axis=0)).max(), np.abs(np.diff(phi, axis=1)).max()))


@pytest.mark.parametrize("shape", [(64, 64), (37, 50)])
def test_a_real_finite_phase_map_of_the_shape(shape):
    phi = smooth_phase(shape, seed=0)
    assert phi.shape == shape and np.isrealobj(phi) and np.isfinite(phi).all()
    np.testing.assert_allclose(np.abs(np.exp(1j * phi)), 1.0, atol=1e-12)  # a pure phase factor


@pytest.mark.parametrize("seed", SEEDS)
def test_neighbouring_pixels_differ_little_and_less_on_a_finer_grid(seed):
    coarse, fine = max_step(smooth_phase((64, 64), seed)), max_step(smooth_phase((127, 127), seed))
    assert coarse < 0.5 and fine < 0.6 * coarse  # a continuous map sampled at half the spacing


@pytest.mark.parametrize("seed", SEEDS)
def test_the_phase_varies_over_the_image(seed):
    assert np.ptp(smooth_phase((64, 64), seed)) > 1.0  # radians: not a constant offset


def test_reproducible_by_seed_and_different_for_different_seeds():
    maps = [smooth_phase((32, 48), s) for s in SEEDS]
    assert all(np.array_equal(m, smooth_phase((32, 48), s)) for s, m in zip(SEEDS, maps))
    assert all(not np.allclose(a, b) for i, a in enumerate(maps) for b in maps[i + 1:])


def test_the_global_random_state_is_untouched():
    before = np.random.get_state()
    smooth_phase((16, 16), seed=5)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
