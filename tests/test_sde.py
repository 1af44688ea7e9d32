"""VE-SDE: golden values from ``sde_golden.pt`` and properties of the reverse SDE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_golden

import sde_lib


@pytest.fixture(scope="module")
def golden(reference):
    return reference("sde_golden.pt")


@pytest.fixture(scope="module")
def sde(golden):
    p = golden["vesde_params"]
    return sde_lib.VESDE(sigma_min=p["sigma_min"], sigma_max=p["sigma_max"], N=p["N"])


def assert_same(actual: torch.Tensor, expected: torch.Tensor):
    assert_golden(actual, expected)


# ---------------------------------------------------------------------------------------------- golden values

def test_discrete_sigmas_and_constants(golden, sde):
    assert sde.T == golden["vesde_params"]["T"]
    assert sde.N == golden["vesde_params"]["N"]
    assert_same(sde.discrete_sigmas, golden["discrete_sigmas_N10"])


def test_marginal_std_float32_and_float64(golden, sde):
    x, t = golden["x_small"], golden["t"]
    mean, std = sde.marginal_prob(x, t)
    assert mean is x
    assert_same(std, golden["marginal_std"])
    _, std64 = sde.marginal_prob(x.double(), t.double())
    assert_same(std64, golden["marginal_std_f64"])


def test_sde_drift_and_diffusion(golden, sde):
    drift, diffusion = sde.sde(golden["x_small"], golden["t"])
    assert_same(drift, golden["sde_drift"])
    assert_same(diffusion, golden["sde_diffusion"])


def test_smld_discretize(golden, sde):
    x, t = golden["x_small"], golden["t"]
    f, G = sde.discretize(x, t)
    assert_same(f, golden["discretize_f"])
    assert_same(G, golden["discretize_G"])
    assert_same(sde.timestep_index(t), golden["discretize_timestep_index"])


def test_euler_maruyama_discretize(golden, sde):
    x, t = golden["x_small"], golden["t"]
    f, G = sde.euler_maruyama_discretize(x, t)
    assert_same(f, golden["euler_maruyama_discretize_f"])
    assert_same(G, golden["euler_maruyama_discretize_G"])
    # the generic SDE.discretize is Euler-Maruyama; VESDE overrides it with SMLD
    assert_same(sde_lib.SDE.discretize(sde, x, t)[1], golden["euler_maruyama_discretize_G"])


def test_prior_logp(golden, sde):
    assert_same(sde.prior_logp(golden["prior_logp_z"]), golden["prior_logp"])


def test_model_sigmas_buffer(golden):
    # models/utils.get_sigmas(config): exp(linspace(log sigma_max, log sigma_min, num_scales)) in float64
    sigmas = np.exp(np.linspace(np.log(378.0), np.log(0.01), 2000))
    # to 2 ulp: NumPy's vectorised exp rounds differently on AVX2 and AVX-512 CPUs (1 ulp seen)
    np.testing.assert_allclose(sigmas, golden["model_sigmas_buffer_N2000"].numpy(), rtol=4.5e-16, atol=0)
    # it is the float64 reverse of the SDE's float32 discrete_sigmas
    ve = sde_lib.VESDE(0.01, 378.0, 2000)
    torch.testing.assert_close(ve.discrete_sigmas.double().flip(0), golden["model_sigmas_buffer_N2000"],
                               rtol=1e-5, atol=0)


def test_models_get_sigmas_matches_buffer(golden):
    from models import utils as mutils
    from types import SimpleNamespace
    config = SimpleNamespace(model=SimpleNamespace(sigma_min=0.01, sigma_max=378.0, num_scales=2000))
    sigmas = np.asarray(mutils.get_sigmas(config))
    np.testing.assert_allclose(sigmas, golden["model_sigmas_buffer_N2000"].numpy(), rtol=4.5e-16, atol=0)  # 2 ulp


@pytest.mark.parametrize("N", [10, 100, 500, 1000, 2000])
def test_sampler_time_tables(golden, N):
    table = golden["sampler_time_tables"][N]
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=378.0, N=N)
    timesteps = torch.linspace(ve.T, 1e-5, ve.N)  # the reconstruction samplers' grid
    assert_same(timesteps, table["timesteps"])
    index = ve.timestep_index(timesteps)
    assert_same(index, table["index"])
    assert torch.equal(index, torch.arange(N - 1, -1, -1))  # step i uses sigma_{N-1-i}
    sigma, adjacent_sigma = ve.adjacent_sigmas(timesteps)
    assert_same(sigma, table["sigma"])
    assert_same(adjacent_sigma, table["adjacent_sigma"])
    # G = sqrt(sigma_i^2 - sigma_{i-1}^2): the difference amplifies rounding of the sigmas
    torch.testing.assert_close(ve.discretize(timesteps, timesteps)[1], table["G"], rtol=256 * 1.2e-7, atol=0)
    assert_same(ve.marginal_prob(timesteps, timesteps)[1], table["score_label_std"])
    assert_same(ve.discrete_sigmas, table["discrete_sigmas"])


# ---------------------------------------------------------------------------------------------- properties

def test_discretize_G_telescopes_to_sigma_max():
    # sum_i G_i^2 = sum_i (sigma_i^2 - sigma_{i-1}^2) = sigma_max^2
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=378.0, N=50)
    t = torch.linspace(1.0, 1e-5, ve.N, dtype=torch.float64)
    _, G = ve.discretize(torch.zeros(ve.N, 1), t)
    assert G.dtype == torch.float64
    torch.testing.assert_close(torch.sum(G ** 2), ve.discrete_sigmas.double()[-1] ** 2, rtol=1e-6, atol=0)


def test_diffusion_matches_variance_growth():
    # d sigma(t)^2 / dt = g(t)^2 for the VE-SDE
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, requires_grad=True)
    var = ve.marginal_prob(torch.zeros(3, 1), t)[1] ** 2
    (dvar,) = torch.autograd.grad(var.sum(), t)
    _, g = ve.sde(torch.zeros(3, 1, dtype=torch.float64), t.detach())
    torch.testing.assert_close(dvar, g ** 2, rtol=1e-10, atol=0)


def test_reverse_sde_and_probability_flow():
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=100)
    x = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)

    def score_fn(x, t):  # score of N(0, (1 + sigma^2) I): a data distribution N(0, I) diffused
        return -x / (1 + ve.marginal_prob(x, t)[1][:, None, None, None] ** 2)

    rsde = ve.reverse(score_fn)
    assert rsde.N == ve.N and rsde.T == ve.T
    _, g = ve.sde(x, t)
    drift, diffusion = rsde.sde(x, t)
    torch.testing.assert_close(drift, -g[:, None, None, None] ** 2 * score_fn(x, t))
    assert torch.equal(diffusion, g)
    _, G = ve.discretize(x, t)
    rev_f, rev_G = rsde.discretize(x, t)
    torch.testing.assert_close(rev_f, -G[:, None, None, None] ** 2 * score_fn(x, t))
    assert torch.equal(rev_G, G)

    ode = ve.reverse(score_fn, probability_flow=True)
    ode_drift, ode_diffusion = ode.sde(x, t)
    torch.testing.assert_close(ode_drift, 0.5 * drift)
    assert ode_diffusion == 0
    ode_f, ode_G = ode.discretize(x, t)
    torch.testing.assert_close(ode_f, 0.5 * rev_f)
    assert torch.equal(ode_G, torch.zeros_like(G))


def test_prior_sampling_generator_and_global_rng():
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=378.0, N=10)
    state = torch.get_rng_state()
    a = ve.prior_sampling((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    b = ve.prior_sampling((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and a.shape == (2, 1, 8, 8) and a.dtype == torch.float32
    expected = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 378.0
    assert torch.equal(a, expected)


def test_prior_logp_matches_gaussian_density():
    ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, N=10)
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.distributions.Normal(0.0, 5.0).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(ve.prior_logp(z), expected)


def test_sde_is_abstract():
    with pytest.raises(TypeError):
        sde_lib.SDE(10)
