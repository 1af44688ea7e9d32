"""The decomposed diffusion sampler ('dds' predictor, Chung et al. ICLR 2024) and the EDM time grid.

Toy prior (tests/test_sampling.py): every pixel ~ N(mu, s^2), exact score, so quality can be compared with
the zero-filled input at any step count; plus the embedded prior at N = 2 on a small crop.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from score_mri.samplers import predictors
import sampling
from score_mri.samplers import pc_loop
import utils
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
from test_sampling import ToyGaussianScore, coil_maps, column_mask, smooth_image, symmetric_mask

REPO = Path(__file__).resolve().parents[1]
S = 0.2  # prior standard deviation


def settings(N: int, **kw) -> sampling.SamplerSettings:
    """dds settings on the toy noise range."""
    base = dict(N=N, predictor="dds", corrector="none", sigma_min=0.01, sigma_max=20.0)
    base.update(kw)
    return sampling.SamplerSettings(**base)


def single_coil(is_complex: bool, size: int = 16, seed: int = 3):
    """(model, op, y, truth, zero-filled) of a toy single-coil problem (symmetric mask: real stays real)."""
    mu = smooth_image(size, size)
    g = torch.Generator().manual_seed(seed)
    truth = mu + S * torch.randn(1, 1, size, size, generator=g)
    if is_complex:
        truth = truth + 1j * S * torch.randn(1, 1, size, size, generator=g)
    op = SingleCoilCartesian(symmetric_mask(size, size, seed))
    y = op.A(truth.to(torch.complex64))
    zf = op.zero_filled(y)
    return ToyGaussianScore(mu, S), op, y, truth, (zf if is_complex else zf.real)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error (complex: of the difference's magnitude)."""
    return float(torch.mean(torch.abs(a - b) ** 2))


def test_registered_and_projecting():
    cls = sampling.get_predictor("dds")
    assert cls is predictors.DecomposedPredictor and cls.projects
    pred = cls.from_settings(settings(3).make_sde(), lambda x, t: -x, settings(3, eta=0.5))
    assert pred.eta == 0.5 and pred.n_noise == 1
    assert cls.from_settings(settings(3).make_sde(), lambda x, t: -x, settings(3)).n_noise == 0


@pytest.mark.parametrize("sampler", ["real", "complex"])
@pytest.mark.parametrize("N", [1, 2, 3, 4, 5])
def test_few_steps_never_worse_than_zero_filled(sampler, N):
    """N = 1..5 on the toy prior: at least as good as zero-filled, and the measured k-space kept exactly."""
    model, op, y, truth, zf = single_coil(sampler == "complex")
    out = sampling.get_sampler(sampler)(model, op, y, settings(N), generator=torch.Generator().manual_seed(0))
    assert out.network_calls == N
    assert torch.all(torch.isfinite(torch.view_as_real(out.x) if out.x.is_complex() else out.x))
    assert mse(out.x, truth) <= mse(zf, truth)
    torch.testing.assert_close(op.A(out.x.to(torch.complex64)), y, rtol=0, atol=1e-4 * float(y.abs().max()))


def test_more_steps_sample_the_posterior():
    """20 deterministic steps give a posterior sample: spread s^2 around E[x | y] in the unmeasured part only."""
    model, op, y, truth, zf = single_coil(False)
    posterior_mean = torch.real(op.project(model.mu.to(torch.complex64), y))
    out = sampling.sample_real(model, op, y, settings(20), generator=torch.Generator().manual_seed(0)).x
    unmeasured = 1 - float(op.mask.mean())
    assert mse(out, posterior_mean) == pytest.approx(S ** 2 * unmeasured, rel=0.35)
    assert mse(zf, posterior_mean) > 3 * S ** 2 * unmeasured  # zero-filled is far from the posterior


def test_eta_zero_draws_no_noise_after_the_start():
    """eta = 0: the loop consumes no random numbers (only the start does); eta = 1 does; fixed seed reproduces."""
    model, op, y, _, _ = single_coil(True)
    states, outs = {}, {}
    for N, eta in [(3, 0.0), (5, 0.0), (5, 1.0)]:
        g = torch.Generator().manual_seed(7)
        outs[N, eta] = sampling.sample_complex(model, op, y, settings(N, eta=eta), generator=g).x
        states[N, eta] = g.get_state()
    assert torch.equal(states[3, 0.0], states[5, 0.0])
    assert not torch.equal(states[5, 0.0], states[5, 1.0])
    again = sampling.sample_complex(model, op, y, settings(5), generator=torch.Generator().manual_seed(7)).x
    assert torch.equal(again, outs[5, 0.0])


@pytest.mark.parametrize("sampler", ["ssos", "hybrid", "sense"])
def test_multi_coil_samplers(sampler):
    """Algorithms 4-5 and the SENSE sampler accept the dds predictor (4 steps, toy prior).

    Only the SENSE sampler applies the toy prior to the image it models (Algorithms 4-5 apply it to coil
    images S_c x, which it does not describe): it must beat zero-filled; Algorithm 4 keeps each coil's
    measured k-space exactly.
    """
    size, n_coils = 16, 3
    mu = smooth_image(size, size)
    img = (mu + S * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(1))).to(torch.complex64)
    sens, mask = coil_maps(n_coils, size, size), column_mask(size, size, 0)
    y = mask * utils.fft2_m(sens * img)
    op = SENSE(sens, mask) if sampler != "ssos" else MultiCoilCartesian(mask)
    out = sampling.get_sampler(sampler)(ToyGaussianScore(mu, S), op, y, settings(4, cg_iters=10, gamma=1e-3),
                                        generator=torch.Generator().manual_seed(0)).x
    assert torch.all(torch.isfinite(torch.view_as_real(out)))
    assert out.shape == ((1, 1, size, size) if sampler == "sense" else y.shape)
    if sampler == "ssos":
        torch.testing.assert_close(mask * utils.fft2_m(out), y, rtol=0, atol=1e-4)
    if sampler == "sense":
        assert mse(out, img) < 0.5 * mse(op.A_H(y), img)


def test_few_steps_start_near_the_data():
    """dds never shrinks sigma by more than max_sigma_ratio per step: few steps start at a low noise level."""
    ratio = predictors.DecomposedPredictor.max_sigma_ratio
    for N, grid in [(1, "ve"), (3, "ve"), (4, "edm"), (40, "ve")]:
        st = settings(N, grid=grid, sigma_max=378.0)
        t = pc_loop.time_grid(st, torch.device("cpu")).double()
        sigma = 0.01 * (378.0 / 0.01) ** t
        sigma_eps = 0.01 * (378 / 0.01) ** st.eps
        assert float(sigma[0]) == pytest.approx(min(378.0, sigma_eps * ratio ** (N - 1)), rel=1e-4)
        assert float(sigma[-1]) == pytest.approx(sigma_eps, rel=1e-4)
        assert pc_loop.sigma_start(st, st.make_sde()) == pytest.approx(float(sigma[0]), rel=1e-4)
    # other predictors keep the full range
    st = settings(3, predictor="ancestral_sampling", sigma_max=378.0)
    assert float(pc_loop.time_grid(st, torch.device("cpu"))[0]) == 1.0


def test_edm_grid_follows_karras_rho_7():
    """grid='edm': sigma_i^(1/7) is linear in i between sigma(t0) and sigma(eps)."""
    st = sampling.SamplerSettings(N=12, grid="edm", t0=0.8, predictor="ancestral_sampling")
    t = pc_loop.time_grid(st, torch.device("cpu")).double()
    sigma = st.sigma_min * (st.sigma_max / st.sigma_min) ** t
    root = sigma ** (1 / 7)
    steps = root[1:] - root[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-3)
    assert float(t[0]) == pytest.approx(0.8, abs=1e-6) and float(t[-1]) == pytest.approx(st.eps, abs=1e-6)
    ve = pc_loop.time_grid(st.replace(grid="ve"), torch.device("cpu"))
    assert float((t - ve.double()).abs().max()) > 0.05  # a different grid


def test_embedded_prior_two_steps_not_below_zero_filled():
    """The shipped prior, N = 2 on a 64x64 crop of sample 001: PSNR at least the zero-filled one."""
    from score_mri.cli.flags import DEFAULT_CKPT, DEFAULT_CONFIG, load_config
    from score_mri.metrics import psnr
    from score_mri.recon import load_model, reconstruct, simulate_mask
    config = load_config(str(DEFAULT_CONFIG))
    model = load_model(config, DEFAULT_CKPT, "cpu")
    img = np.load(REPO / "samples/real/retrospective/001.npy")
    top, left = (img.shape[0] - 64) // 2, (img.shape[1] - 64) // 2
    label = np.ascontiguousarray(img[top:top + 64, left:left + 64]).astype(np.float32)
    op = SingleCoilCartesian(simulate_mask((1, 1, 64, 64), "gaussian1d", 4, 0.08, seed=0))
    y = op.A(torch.from_numpy(label)[None, None].to(torch.complex64))
    zf = op.zero_filled(y).real[0, 0].numpy()
    st = sampling.SamplerSettings(N=2, predictor="dds", corrector="none", sigma_min=config.model.sigma_min,
                                  sigma_max=config.model.sigma_max)
    out = reconstruct(model, "real", op, y, st, generator=torch.Generator().manual_seed(0))
    assert out.network_calls == 2
    assert psnr(label, out.image) >= psnr(label, zf)


def test_small_N_warning_for_the_sde_predictors():
    """reverse_diffusion / ancestral with few steps warn once (they diverge there); dds and long runs do not."""
    sde = settings(3).make_sde()
    with pytest.warns(UserWarning, match="N=3"):
        predictors.get_predictor("ancestral_sampling").from_settings(sde, lambda x, t: -x,
                                                                     settings(3, predictor="ancestral_sampling"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictors.get_predictor("dds").from_settings(sde, lambda x, t: -x, settings(3))
        long = settings(predictors.SMALL_N, predictor="reverse_diffusion")
        predictors.get_predictor("reverse_diffusion").from_settings(long.make_sde(), lambda x, t: -x, long)
    with pytest.warns(UserWarning, match="dds"):
        predictors.get_predictor("reverse_diffusion").from_settings(sde, lambda x, t: -x,
                                                                    settings(3, predictor="reverse_diffusion"))
