"""Value-level tests of the phase-demodulated samplers (``complex_mode`` 'phase' and 'phase_ri').

The score model is the exact score of a Gaussian prior N(mu, s^2 I) on each real image the network sees,
noised to sigma: -(x - mu) / (s^2 + sigma^2). For noiseless Cartesian measurements the posterior mean is known
in closed form (a projection, or a small least-squares problem when the state is real), and with s below the
last noise level every correct sampler lands on it: Algorithms 3 and 5 (and 4) and the SENSE sampler in both
phase modes. A wrong-sign remodulation or a demodulation left out moves the result far from it. The Kaczmarz
step of Algorithm 5 in phase mode and the phase estimate from the measured k-space centre are checked
against hand computations in numpy.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import np_fft2c, np_ifft2c

H = W = 24
C = 3
COIL_PHASES = (0.8, -1.1, 2.0)        # each coil image's constant phase (multi-coil cases)
IMAGE_PHASE = 0.6                      # the combined image's phase (SENSE)
S = 0.01                               # prior standard deviation (below sigma_min: results sit on the mean)
TOL = 0.1                              # |result - posterior mean| / |zero-filled - posterior mean|


class GaussianPrior(torch.nn.Module):
    """Exact score of N(mu, s^2 I) after adding noise of std sigma (the model's second argument)."""

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.register_buffer("mu", mu)
        self.s = float(s)
        self.unused = torch.nn.Parameter(torch.zeros(1))      # samplers look up the model's device

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """-(x - mu) / (s^2 + sigma^2) per batch element."""
        return -(x - self.mu) / (self.s ** 2 + sigma.reshape(-1, 1, 1, 1).to(x.dtype) ** 2)


def _grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised coordinates (y, x) in [-1, 1] and the column index, each [H, W]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    return yy, xx, torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)


def prior_mean() -> torch.Tensor:
    """A positive mean image [1, 1, H, W] with energy in unmeasured columns (so the prior matters there)."""
    yy, xx, j = _grid()
    mu = 1.0 + 0.3 * torch.cos(2 * xx) * torch.cos(yy) + 0.25 * torch.cos(2 * np.pi * 5 * j / W)
    return mu[None, None].float()


def true_magnitude() -> torch.Tensor:
    """The true (real, positive) image [1, 1, H, W]: the mean plus a disc and a step."""
    yy, xx, _ = _grid()
    return prior_mean() + (0.5 * ((xx - 0.2) ** 2 + (yy + 0.1) ** 2 < 0.2).float()
                           - 0.2 * (xx > 0.5).float())[None, None]


def column_mask() -> torch.Tensor:
    """Columns [1, 1, H, W]: a 7-column centre (an odd, symmetric calibration block) and every 4th column."""
    c = W // 2
    cols = torch.zeros(W)
    cols[::4] = 1
    cols[c - 3:c + 4] = 1
    cols[c - 4] = cols[c + 4] = 0
    return cols.expand(H, W)[None, None].clone()


def settings(mode: str, **kw):
    """Decomposed sampler (deterministic), 30 steps from sigma 20 to 0.01."""
    from score_mri.samplers.pc_loop import SamplerSettings
    return SamplerSettings(N=30, predictor="dds", corrector="none", sigma_min=0.01, sigma_max=20.0,
                           complex_mode=mode, **kw)


def polar(phi) -> torch.Tensor:
    """exp(i phi) as a complex tensor."""
    phi = torch.as_tensor(phi, dtype=torch.float32)
    return torch.polar(torch.ones_like(phi), phi)


def real_state_posterior(forward, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Posterior mean [1, 1, H, W] of a real image m ~ N(mu, s^2 I) given noiseless y = forward(m) on the mask.

    The measurement is real-linear in m: stacked real and imaginary parts of the measured entries, A_r m = y_r;
    the posterior mean is mu + pinv(A_r) (y_r - A_r mu) (least squares in float64)."""
    n = H * W
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, H, W).to(torch.complex128)
    rows = forward(basis)[:, :, mask[0, 0].bool()].reshape(n, -1)          # [n, measured entries]
    a = torch.cat([rows.real, rows.imag], 1).T
    yv = y.to(torch.complex128)[:, :, mask[0, 0].bool()].reshape(-1)
    mu = prior_mean().reshape(-1).double()
    m = mu + torch.linalg.pinv(a, rtol=1e-6) @ (torch.cat([yv.real, yv.imag]) - a @ mu)
    return m.reshape(1, 1, H, W).float()


def closeness(result: torch.Tensor, posterior: torch.Tensor, zero_filled: torch.Tensor) -> float:
    """|result - posterior| relative to |zero-filled - posterior|."""
    return float((result - posterior).abs().norm() / (zero_filled - posterior).abs().norm())


def run(name: str, op, y: torch.Tensor, mode: str, **kw) -> torch.Tensor:
    """A sampler of the table on the Gaussian prior; its result."""
    from score_mri.samplers.table import SAMPLERS
    model = GaussianPrior(prior_mean(), S)
    return SAMPLERS[name](model, op, y, settings(mode, **kw), generator=torch.Generator().manual_seed(0)).x


# ---------------------------------------------------------------------------------------------- single coil

@pytest.mark.parametrize("mode", ["ri", "phase", "phase_ri"])
def test_algorithm_3_lands_on_the_posterior_mean(mode):
    from score_mri.physics.operators import SingleCoilCartesian
    mask, phase = column_mask(), polar(COIL_PHASES[0])
    op = SingleCoilCartesian(mask)
    x_true = true_magnitude() * phase
    y = op.A(x_true.to(torch.complex64))
    mu = prior_mean()
    if mode == "ri":        # real and imaginary parts each N(mu, s^2)
        posterior = op.project(mu * (1 + 1j), y)
    elif mode == "phase_ri":  # both parts of the demodulated image: the circular prior turns with the phase
        posterior = op.project(mu * (1 + 1j) * phase, y)
    else:                   # the real demodulated image m, x = m exp(i phi)
        m = real_state_posterior(lambda b: op.A(b * phase.to(b.dtype)), y, mask)
        posterior = op.project(m * phase, y)
    result = run("complex", op, y, mode)
    zf = op.zero_filled(y)
    assert closeness(result, posterior, zf) < TOL
    if mode == "phase":      # the prior matches the truth's phase: closer to it than zero-filled
        assert (result - x_true).abs().norm() < 0.5 * (zf - x_true).abs().norm()


# ---------------------------------------------------------------------------------------------- multi-coil

def multi_coil_problem() -> dict:
    """Unit-modulus maps exp(i phi_c) / sqrt(C), a combined image with its own phase, its coil images and data."""
    from score_mri.physics.operators import SENSE, MultiCoilCartesian
    mask = column_mask()
    sens = (polar(COIL_PHASES) / np.sqrt(C))[None, :, None, None].expand(1, C, H, W).contiguous()
    image = true_magnitude() * np.sqrt(C) * polar(IMAGE_PHASE)              # [1, 1, H, W]
    coils = sens * image                                                    # |coil c| = true magnitude
    cart = MultiCoilCartesian(mask)
    y = cart.A(coils.to(torch.complex64))
    return {"mask": mask, "sens": sens, "image": image, "coils": coils, "cart": cart,
            "sense": SENSE(sens, mask), "y": y, "phases": polar(COIL_PHASES)[None, :, None, None] * polar(IMAGE_PHASE)}


@pytest.mark.parametrize("name", ["ssos", "hybrid"])
@pytest.mark.parametrize("mode", ["phase", "phase_ri"])
def test_algorithms_4_and_5_land_on_the_posterior_mean(name, mode):
    p = multi_coil_problem()
    cart, y, e = p["cart"], p["y"], p["phases"]
    mu = prior_mean()
    if mode == "phase_ri":
        posterior = cart.project(mu * (1 + 1j) * e, y)
    else:                    # each coil's real demodulated image, its own posterior (same mask for all)
        m = [real_state_posterior(lambda b, k=k: cart.restrict(slice(k, k + 1)).A(b * e[:, k:k + 1].to(b.dtype)),
                                  y[:, k:k + 1], p["mask"]) for k in range(C)]
        posterior = cart.project(torch.cat(m, 1) * e, y)
    op = p["sense"] if name == "hybrid" else cart
    result = run(name, op, y, mode, m_steps=2)
    assert result.shape == (1, C, H, W)
    assert closeness(result, posterior, cart.zero_filled(y)) < TOL


@pytest.mark.parametrize("mode", ["phase", "phase_ri"])
def test_sense_sampler_lands_on_the_posterior_mean(mode):
    p = multi_coil_problem()
    sop, y = p["sense"], p["y"]
    phase = polar(IMAGE_PHASE)               # the coil-combined low-resolution image's phase
    mu = prior_mean()
    if mode == "phase_ri":                   # A^H A is the k-space projection here: x0 + A^H (y - A x0)
        x0 = (mu * (1 + 1j) * phase).to(torch.complex64)
        posterior = x0 + sop.A_H(y - sop.A(x0))
    else:
        from score_mri.physics.operators import SENSE
        wide = SENSE(p["sens"].to(torch.complex128), p["mask"].double())
        posterior = real_state_posterior(lambda b: wide.A(b * phase.to(b.dtype)), y, p["mask"]) * phase
    result = run("sense", sop, y, mode, cg_iters=5)
    assert result.shape == (1, 1, H, W)
    assert closeness(result, posterior, sop.A_H(y)) < TOL


# ---------------------------------------------------------------------------------------------- by hand

fft2c, ifft2c = np_fft2c, np_ifft2c  # the NumPy reference pair (conftest)


class _Schedule:
    """A lambda schedule with a known value: 0.5 + 0.01 t over ``total`` iterations."""

    def __init__(self, total: int):
        self.total = total

    def get_current_lambda(self, t: float) -> float:
        """lambda(t)."""
        return 0.5 + 0.01 * t


@pytest.mark.parametrize("mode", ["phase", "phase_ri"])
def test_phase_mode_kaczmarz_step_by_hand(mode):
    from score_mri.physics.operators import SENSE, MultiCoilCartesian
    from score_mri.physics.phase import PhaseDemodulated
    from score_mri.samplers import sense as sense_mod
    rng = np.random.RandomState(3)
    h, w = 16, 16
    maps = rng.randn(1, C, h, w) + 1j * rng.randn(1, C, h, w)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=1, keepdims=True))            # sum_c |S_c|^2 = 1
    mask = (rng.rand(1, 1, 1, w) < 0.5).astype(np.float32) * np.ones((1, 1, h, 1), np.float32)
    y = mask * fft2c(rng.randn(1, C, h, w) + 1j * rng.randn(1, C, h, w))
    phi = rng.uniform(-np.pi, np.pi, (1, C, h, w))
    m = rng.randn(1, C, h, w) if mode == "phase" else rng.randn(1, C, h, w) + 1j * rng.randn(1, C, h, w)
    m_mean = m + 0.1

    t = {k: torch.from_numpy(v) for k, v in dict(maps=maps.astype(np.complex64), mask=mask,
                                                  y=y.astype(np.complex64), phi=phi.astype(np.float32)).items()}
    state = PhaseDemodulated(MultiCoilCartesian(t["mask"]), t["phi"])
    problem = sense_mod._Problem(state, SENSE(t["maps"], t["mask"]))
    N, m_steps = 10, 3
    alg = sense_mod.PHASE_ALGORITHMS["hybrid"][mode]
    step = alg.post_step(problem, t["y"], settings(mode, m_steps=m_steps).replace(N=N, lamb_schedule=_Schedule(N)))

    def by_hand(mi: np.ndarray, i: int) -> np.ndarray:
        """x_c = m_c e^{i phi_c}; x_c += lamb S_c A^H (y - A S^H x); back to m_c = x_c e^{-i phi_c}."""
        lamb = 0.5 + 0.01 * i
        x = mi * np.exp(1j * phi)
        combined = np.sum(np.conj(maps) * x, axis=1, keepdims=True)
        residual = y - mask * fft2c(maps * combined)
        update = lamb * np.sum(np.conj(maps) * ifft2c(mask * residual), axis=1, keepdims=True)
        out = (x + maps * update) * np.exp(-1j * phi)
        return out.real if mode == "phase" else out

    dtype = torch.float32 if mode == "phase" else torch.complex64
    for i in (0, 3, 6):
        a, b = step(i, torch.from_numpy(m).to(dtype), torch.from_numpy(m_mean).to(dtype))
        np.testing.assert_allclose(a.numpy(), by_hand(m, i), atol=2e-5)
        np.testing.assert_allclose(b.numpy(), by_hand(m_mean, i), atol=2e-5)
    a, b = step(4, torch.from_numpy(m).to(dtype), torch.from_numpy(m_mean).to(dtype))  # not a Kaczmarz iteration
    np.testing.assert_array_equal(a.numpy(), torch.from_numpy(m).to(dtype).numpy())


def test_phase_estimate_from_the_measured_centre_only():
    from score_mri.physics.operators import MultiCoilCartesian
    from score_mri.physics.phase import calibration_size, estimate_phase
    rng = np.random.RandomState(7)
    h, w, c = 16, 16, 8
    cols = np.zeros(w, np.float32)
    cols[[1, 3, 13, 14]] = 1
    cols[c - 2:c + 3] = 1                                           # a 5-column centre, c +- 3 unsampled
    mask = np.broadcast_to(cols, (1, 1, h, w)).copy()
    x = (1.5 + rng.rand(1, 2, h, w)) * np.exp(1j * rng.uniform(-3, 3, (1, 2, h, w)))
    y = mask * fft2c(x)
    assert calibration_size(torch.from_numpy(mask)) == (5, 5)
    # by hand: Hann taper (5 inner points of a 7-point window) on the centred 5 x 5 block, low-resolution phase
    taper = np.zeros((h, w))
    taper[c - 2:c + 3, c - 2:c + 3] = np.outer(np.hanning(7)[1:-1], np.hanning(7)[1:-1])
    expected = np.angle(ifft2c(taper * y))

    def estimate(k: np.ndarray) -> np.ndarray:
        """The library's estimate from measured k-space ``k``."""
        op = MultiCoilCartesian(torch.from_numpy(mask))
        return estimate_phase(op, torch.from_numpy(k.astype(np.complex64)), torch.from_numpy(mask)).numpy()

    got = estimate(y)
    np.testing.assert_allclose(np.exp(1j * got), np.exp(1j * expected), atol=1e-4)
    outside = np.ones((h, w), bool)
    outside[c - 2:c + 3, c - 2:c + 3] = False
    other = y + mask * outside * fft2c(rng.randn(1, 2, h, w))        # other measured data outside the centre
    np.testing.assert_allclose(np.exp(1j * estimate(other)), np.exp(1j * got), atol=1e-4)
