"""Properties of the PC samplers (sampling.py) with a toy analytic score: no trained network needed.

Toy prior: every pixel x ~ N(mu, s^2) independently; its VE-perturbed score at noise level sigma is
exactly -(x - mu) / (s^2 + sigma^2), so posterior means under Cartesian sampling are known in closed form.
"""
from __future__ import annotations

import pytest
import torch

import sampling
import sde_lib
import utils


class ToyGaussianScore(torch.nn.Module):
    """Exact score of N(mu, s^2 I) perturbed by N(0, sigma^2 I): -(x - mu) / (s^2 + sigma^2)."""

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.register_buffer("mu", mu)  # [1, 1, H, W]
        self.s = s
        self.calls = 0
        self.unused = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return -(x - self.mu) / (self.s ** 2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def identity(x):
    return x


def smooth_image(h: int, w: int) -> torch.Tensor:
    """A smooth deterministic test image [1, 1, h, w]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return (torch.exp(-3 * (xx ** 2 + yy ** 2)) + 0.3 * xx).reshape(1, 1, h, w)


def symmetric_mask(h: int, w: int, seed: int, frac: float = 0.25) -> torch.Tensor:
    """Random 0/1 mask [1, 1, h, w] closed under k -> -k in the shifted k-space (so a real image stays real)."""
    g = torch.Generator().manual_seed(seed)
    m0 = (torch.rand(h, w, generator=g) < frac).float()
    ih, iw = (-torch.arange(h)) % h, (-torch.arange(w)) % w
    return torch.maximum(m0, m0[ih][:, iw]).reshape(1, 1, h, w)


def column_mask(h: int, w: int, seed: int) -> torch.Tensor:
    """Random column mask [1, 1, h, w] with a fully sampled centre."""
    g = torch.Generator().manual_seed(seed)
    cols = (torch.rand(w, generator=g) < 0.3).float()
    cols[w // 2 - 2:w // 2 + 2] = 1
    return cols.expand(h, w).reshape(1, 1, h, w).clone()


def coil_maps(n_coils: int, h: int, w: int) -> torch.Tensor:
    """Smooth complex coil maps [1, C, h, w] normalised to sum_c |S_c|^2 = 1."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    maps = []
    for c in range(n_coils):
        angle = 2 * torch.pi * c / n_coils
        mag = torch.exp(-((xx - 0.8 * torch.cos(torch.tensor(angle))) ** 2 + (yy - 0.8 * torch.sin(
            torch.tensor(angle))) ** 2))
        maps.append(mag * torch.exp(1j * (xx * (c + 1))))
    sens = torch.stack(maps).unsqueeze(0).to(torch.complex64)
    return sens / torch.sqrt(torch.sum(torch.abs(sens) ** 2, dim=1, keepdim=True))


def multicoil_problem(n_coils: int = 3, size: int = 24, seed: int = 0):
    """A toy multi-coil problem: (model, data, y, mask, sens, image) with coil images S_c x."""
    mu = smooth_image(size, size)
    g = torch.Generator().manual_seed(seed)
    img = (mu + 0.1 * torch.randn(1, 1, size, size, generator=g)).to(torch.complex64)
    sens = coil_maps(n_coils, size, size)
    mask = column_mask(size, size, seed)
    y = mask * utils.fft2_m(sens * img)  # [1, C, H, W]
    return ToyGaussianScore(mu, 0.1), torch.zeros_like(y), y, mask, sens


RD, LG = sampling.ReverseDiffusionPredictor, sampling.LangevinCorrector


def test_registry():
    assert sampling.get_predictor("reverse_diffusion") is RD
    assert sampling.get_predictor("euler_maruyama") is sampling.EulerMaruyamaPredictor
    assert sampling.get_predictor("none") is sampling.NonePredictor
    assert sampling.get_corrector("langevin") is LG
    assert sampling.get_corrector("none") is sampling.NoneCorrector
    with pytest.raises(ValueError, match="unknown predictor"):
        sampling.get_predictor("heun")


def test_fresh_generator_reproduces_global_seed():
    """The original drew from the global RNG after torch.manual_seed(s); Generator().manual_seed(s) is that stream."""
    with torch.random.fork_rng():
        torch.manual_seed(123)
        expected = [torch.randn(2, 1, 8, 8), torch.randn(3, 5)]
    g = torch.Generator().manual_seed(123)
    got = [torch.randn((2, 1, 8, 8), generator=g), torch.randn((3, 5), generator=g)]
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_langevin_step_per_element_and_faithful_batch_mean():
    """Fixed mode: a batched corrector call equals per-element calls; faithful: one step size for the batch."""
    sde = sde_lib.VESDE(0.01, 10, N=10)
    score_fn = lambda x, t: -x * torch.arange(1, x.shape[0] + 1).reshape(-1, 1, 1, 1)  # different norms
    x = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    z = torch.randn(2, 3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    t = torch.full((3,), 0.5)
    fixed = LG(sde, score_fn, 0.16, 2)
    batched = fixed.update_fn(x, t, z=z)[0]
    for b in range(3):
        one = LG(sde, lambda x, t, b=b: -x * (b + 1), 0.16, 2).update_fn(x[b:b + 1], t[:1], z=z[:, b:b + 1])[0]
        torch.testing.assert_close(batched[b:b + 1], one, rtol=1e-6, atol=1e-6)
    faithful = LG(sde, score_fn, 0.16, 1, faithful=True)
    x_new, x_mean = faithful.update_fn(x, t, z=z[:1])
    step = (x_mean - x) / score_fn(x, t)  # [3, 1, 6, 6]: one value everywhere
    torch.testing.assert_close(step, torch.full_like(step, step.flatten()[0].item()), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="Generator"):
        fixed.update_fn(x, t)  # no noise and no generator: refuse the global RNG


@pytest.mark.parametrize("t0, n", [(None, 60), (0.6, 20)])
def test_alg2_converges_to_gaussian_posterior_mean(t0, n):
    """Algorithm 2 on the toy prior: sample mean -> E[x | Fy] = Re ifft2(Fy + fft2(mu)(1 - mask)), right spread."""
    h = w = 16
    s = 0.2
    mu = smooth_image(h, w)
    mask = symmetric_mask(h, w, seed=0)
    x_true = mu + s * torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(5))
    Fy = mask * utils.fft2(x_true)
    posterior_mean = torch.real(utils.ifft2(Fy + utils.fft2(mu) * (1 - mask)))
    model, batch = ToyGaussianScore(mu, s), 16
    sde = sde_lib.VESDE(0.01, 20, N=n)
    outs = []
    for seed in range(2):
        fn = sampling.get_pc_fouriercs_fast(sde, RD, LG, identity, 0.16, continuous=True, t0=t0,
                                            generator=torch.Generator().manual_seed(seed))
        outs.append(fn(model, torch.zeros(batch, 1, h, w), mask, Fy.expand(batch, 1, h, w)))
    out = torch.cat(outs)  # [32, 1, h, w]
    unmeasured = 1 - mask.mean().item()
    expected_rms = s * (unmeasured / out.shape[0]) ** 0.5  # Monte-Carlo error of the sample mean
    rms = lambda a: a.pow(2).mean().sqrt().item()
    assert rms(out.mean(0, keepdim=True) - posterior_mean) < 1.5 * expected_rms
    zero_filled = torch.real(utils.ifft2(Fy))
    assert rms(zero_filled - posterior_mean) > 10 * expected_rms  # the test can tell the two apart
    assert out.var(0).mean().item() == pytest.approx(s ** 2 * unmeasured, rel=0.3)
    assert model.calls == 2 * 2 * n  # corrector + predictor, one network call each per step (both seeds)


@pytest.mark.parametrize("predictor, corrector", [(RD, LG), (sampling.EulerMaruyamaPredictor, LG),
                                                   (RD, sampling.NoneCorrector),
                                                   (sampling.EulerMaruyamaPredictor, sampling.NoneCorrector)])
def test_alg1_unconditional_toy_prior(predictor, corrector):
    """Algorithm 1 samples the toy prior (mean mu, variance s^2), also predictor-only; counts evaluations."""
    mu, s = smooth_image(16, 16), 0.3
    sde = sde_lib.VESDE(0.01, 20, N=200)
    fn = sampling.get_pc_sampler(sde, (32, 1, 16, 16), predictor, corrector, identity, 0.16, continuous=True,
                                 generator=torch.Generator().manual_seed(0))
    x, nfe = fn(ToyGaussianScore(mu, s))
    assert nfe == 400
    assert (x.mean(0, keepdim=True) - mu).abs().mean().item() < 0.05
    assert x.var(0).mean().item() == pytest.approx(s ** 2, rel=0.1)


def test_ancestral_predictor_samples_prior_in_few_steps():
    """With only 10 steps from sigma_max, the VE ancestral step reaches the prior's mean with variance of the
    prior's order (coarse steps shrink it somewhat), where the reverse-diffusion step keeps a variance far
    above the prior's (its injected noise does not shrink with the step)."""
    mu, s = smooth_image(16, 16), 0.3
    sde = sde_lib.VESDE(0.01, 50, N=10)
    out = {}
    for name in ("ancestral_sampling", "reverse_diffusion"):
        fn = sampling.get_pc_sampler(sde, (64, 1, 16, 16), name, "none", identity, 0.16, continuous=True,
                                     generator=torch.Generator().manual_seed(0))
        out[name] = fn(ToyGaussianScore(mu, s))[0]
    x = out["ancestral_sampling"]
    assert (x.mean(0, keepdim=True) - mu).abs().mean().item() < 0.05
    assert 0.3 * s ** 2 < x.var(0).mean().item() < 1.5 * s ** 2
    assert out["reverse_diffusion"].var(0).mean().item() > 2 * s ** 2


def test_determinism_and_global_rng_untouched():
    """Same generator seed -> identical output; another seed -> different; the global RNG state is unchanged."""
    model, data, y, mask, _ = multicoil_problem(n_coils=1, size=16)
    Fy = mask * utils.fft2(utils.ifft2_m(y))  # single-coil k-space in the shifted convention
    sde = sde_lib.VESDE(0.01, 20, N=8)
    state = torch.get_rng_state()
    outs = [sampling.get_pc_fouriercs_RI(sde, RD, LG, identity, 0.16, continuous=True,
                                         generator=torch.Generator().manual_seed(seed))(model, data, mask, Fy)
            for seed in (3, 3, 4)]
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(outs[0], outs[2])


@pytest.mark.parametrize("algorithm", ["ssos", "hybrid"])
def test_batched_equals_per_coil(algorithm):
    """One network call for all coils and parts == one call per coil and part, for the same noise (3 coils, 24x24)."""
    model, data, y, mask, sens = multicoil_problem(n_coils=3, size=24)
    sde = sde_lib.VESDE(0.01, 20, N=6)
    outs, calls = [], []
    for batch_coils in (True, False):
        kw = dict(continuous=True, mask=mask, generator=torch.Generator().manual_seed(0), batch_coils=batch_coils)
        if algorithm == "ssos":
            fn = sampling.get_pc_fouriercs_RI_PI_SSOS(sde, RD, LG, identity, 0.16, **kw)
        else:
            fn = sampling.get_pc_fouriercs_RI_coil_SENSE(sde, RD, LG, identity, 0.16, sens=sens, m_steps=2, **kw)
        model.calls = 0
        outs.append(fn(model, data, y))
        calls.append(model.calls)
    assert outs[0].shape == (1, 3, 24, 24) and outs[0].dtype == torch.complex64
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    assert calls == [2 * 6, 2 * 6 * 3 * 2]  # P and C per step: batched vs per coil and part


def test_measured_kspace_preserved():
    """The final data consistency keeps the measured k-space (Algorithms 2, 3, 4)."""
    sde = sde_lib.VESDE(0.01, 20, N=5)
    kw = dict(continuous=True)
    # Algorithm 2: real image, mask closed under k -> -k
    mu = smooth_image(16, 16)
    mask = symmetric_mask(16, 16, seed=1)
    Fy = mask * utils.fft2(mu + 0.1)
    out = sampling.get_pc_fouriercs_fast(sde, RD, LG, identity, 0.16, generator=torch.Generator().manual_seed(0),
                                         **kw)(ToyGaussianScore(mu, 0.2), torch.zeros(2, 1, 16, 16), mask, Fy)
    assert out.dtype == torch.float32
    torch.testing.assert_close(mask * utils.fft2(out), Fy.expand(2, 1, 16, 16), rtol=0, atol=1e-4 * Fy.abs().max())
    # Algorithms 3 and 4 (complex, any coil count)
    for n_coils in (1, 3):
        model, data, y, mask, _ = multicoil_problem(n_coils=n_coils, size=24, seed=n_coils)
        if n_coils == 1:
            Fy = mask * utils.fft2(utils.ifft2_m(y))
            out = sampling.get_pc_fouriercs_RI(sde, RD, LG, identity, 0.16, generator=torch.Generator().manual_seed(0),
                                               **kw)(model, data, mask, Fy)
            got, want = mask * utils.fft2(out), Fy
        else:
            out = sampling.get_pc_fouriercs_RI_PI_SSOS(sde, RD, LG, identity, 0.16, mask=mask,
                                                       generator=torch.Generator().manual_seed(0), **kw)(model, data, y)
            got, want = mask * utils.fft2_m(out), y
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max())


def test_fast_start_and_callback():
    """t0 < 1 runs N steps from sigma(t0); the callback sees every step; bad t0 is refused."""
    model, data, y, mask, sens = multicoil_problem(n_coils=2, size=16)
    sde = sde_lib.VESDE(0.01, 20, N=10)
    seen = []
    fn = sampling.get_pc_fouriercs_RI_coil_SENSE(sde, RD, LG, identity, 0.16, continuous=True, sens=sens,
                                                 mask=mask, m_steps=3, t0=0.5,
                                                 generator=torch.Generator().manual_seed(0),
                                                 callback=lambda i, n, x: seen.append((i, n, tuple(x.shape))))
    out = fn(model, data, y)
    assert seen == [(i, 10, (1, 2, 16, 16)) for i in range(10)]
    assert torch.isfinite(out).all()
    # started near the data: the reconstruction stays close to the zero-filled estimate's scale
    assert out.abs().max().item() < 10 * utils.ifft2_m(y).abs().max().item()
    with pytest.raises(ValueError, match="t0"):
        sampling.get_pc_fouriercs_RI_PI_SSOS(sde, RD, LG, identity, 0.16, mask=mask, t0=1e-6)


# ---------------------------------------------------------------------------------------------- non-negative finish

def _real_problem(size: int = 16):
    """(model, op, y): a toy prior whose mean dips below zero, a real image and a column mask."""
    from score_mri.physics.operators import SingleCoilCartesian
    mu = smooth_image(size, size) - 0.4                               # the prior's mean has negative parts
    x_true = (smooth_image(size, size) - 0.2).clamp_min(0)             # a magnitude image: >= 0, zero background
    op = SingleCoilCartesian(column_mask(size, size, 1))
    return ToyGaussianScore(mu, 0.2), op, op.A(x_true.to(torch.complex64))


def test_nonnegative_finish_is_one_clip_and_one_real_data_consistency():
    """Algorithm 2 with nonnegative: Re P(max(x, 0)) of the same run without it; its negatives shrink."""
    model, op, y = _real_problem()
    s = sampling.SamplerSettings(N=6, predictor="dds", corrector="none", sigma_max=20.0)
    run = lambda st: sampling.get_sampler("real")(model, op, y, st, generator=torch.Generator().manual_seed(0)).x
    plain, finished = run(s), run(s.replace(nonnegative=True))
    assert not plain.is_complex() and plain.min() < -0.05               # the test has negatives to remove
    torch.testing.assert_close(finished, torch.real(op.project(plain.clamp_min(0).to(torch.complex64), y)))
    assert float(finished.clamp_max(0).abs().sum()) < 0.75 * float(plain.clamp_max(0).abs().sum())
    # faithful runs keep the original's output
    faithful = s.replace(predictor="reverse_diffusion", corrector="langevin", faithful=True, N=3)
    torch.testing.assert_close(run(faithful), run(faithful.replace(nonnegative=True)))


def test_nonnegative_leaves_the_ri_mode_alone():
    """(The phase modes clip their demodulated magnitude: tests/test_sense_phase.py.)"""
    from score_mri.physics.operators import SingleCoilCartesian
    model, op, _ = _real_problem()
    x = torch.randn(1, 1, 16, 16, dtype=torch.complex64, generator=torch.Generator().manual_seed(2))
    y = op.A(x)
    for mode in ("ri",):
        s = sampling.SamplerSettings(N=4, predictor="dds", corrector="none", sigma_max=20.0, complex_mode=mode)
        run = lambda st: sampling.get_sampler("complex")(model, op, y, st, generator=torch.Generator().manual_seed(0)).x
        torch.testing.assert_close(run(s), run(s.replace(nonnegative=True)))
    assert isinstance(op, SingleCoilCartesian)


def test_nonnegative_comes_from_the_config_and_the_cli_can_turn_it_off():
    from configs.ve import colin27_ncsnpp_small
    from score_mri.cli import flags
    config = colin27_ncsnpp_small.get_config()
    assert sampling.SamplerSettings.from_config(config).nonnegative is True
    assert sampling.SamplerSettings().nonnegative is False              # the paper's sampler by default
    for argv, expected in (([], True), (["--no-nonnegative"], False), (["--nonnegative"], True)):
        args = flags.build_parser("t").parse_args(["--data", "-", *argv])
        assert flags.resolve(args, config)[0].nonnegative is expected
