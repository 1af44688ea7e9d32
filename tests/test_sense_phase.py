"""Phase estimation (phase.py), the phase-demodulated samplers and the SENSE sampler (sense_sampling.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sampling
from score_mri.physics.operators import SENSE, MultiCoilCartesian, SingleCoilCartesian
from score_mri.physics.phase import PhaseDemodulated, calibration_size, estimate_phase, modulate
import test_cli
from test_cli import coil_images, run_inproc, tiny  # noqa: F401  (tiny: the random-weight model fixture)
from test_sampling import ToyGaussianScore, coil_maps, column_mask, smooth_image

SIZE = 32


def smooth_phase(h: int, w: int) -> torch.Tensor:
    """A smooth phase map [1, 1, h, w] spanning about +-2 rad."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return (1.5 * xx - 0.8 * yy + 0.6 * xx * yy).reshape(1, 1, h, w)


def complex_problem(size: int = SIZE, seed: int = 0):
    """(model, mask, phi, x, y): a positive smooth image with a smooth phase, single-coil measurements."""
    mu = smooth_image(size, size) + 0.5                               # positive
    phi = smooth_phase(size, size)
    x = modulate(mu, phi).to(torch.complex64)
    mask = column_mask(size, size, seed)
    return ToyGaussianScore(mu, 0.1), mask, phi, x, SingleCoilCartesian(mask).A(x)


def test_phase_estimate_close_to_known_phase():
    _, mask, phi, x, y = complex_problem()
    est = estimate_phase(SingleCoilCartesian(mask), y, mask)
    assert est.shape == phi.shape and not est.is_complex()
    err = torch.angle(torch.exp(1j * (est - phi)))[..., 8:24, 8:24]  # wrapped; inside (the FOV edge wraps)
    assert float(err.abs().mean()) < 0.1, float(err.abs().mean())
    assert float(err.abs().mean()) < 0.2 * float(phi[..., 8:24, 8:24].abs().mean())


def test_calibration_size_and_error():
    mask = column_mask(SIZE, SIZE, 0)
    h, w = calibration_size(mask)
    assert h == w >= 4
    assert bool(mask[0, 0, SIZE // 2, SIZE // 2 - w // 2:SIZE // 2 - w // 2 + w].all())
    with pytest.raises(ValueError, match="phase estimation"):
        calibration_size(torch.zeros(SIZE, SIZE))


def test_demodulated_projection_keeps_measured_kspace():
    _, mask, phi, x, y = complex_problem()
    op = PhaseDemodulated(SingleCoilCartesian(mask), phi)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(1, 1, SIZE, SIZE, generator=g)
    out = op.remodulate(m, y)
    torch.testing.assert_close(SingleCoilCartesian(mask).A(out), y, atol=1e-3, rtol=1e-4)
    # The true demodulated image is a fixed point of m <- Re(P(m exp(i phi)) exp(-i phi)).
    m_true = (x * torch.exp(-1j * phi)).real
    torch.testing.assert_close(op.project(m_true, y).real, m_true, atol=1e-4, rtol=1e-4)


def test_complex_phase_mode_data_consistent_one_image_per_call():
    model, mask, phi, x, y = complex_problem()
    batches = []
    model.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
    s = sampling.SamplerSettings(N=4, complex_mode="phase")
    res = sampling.get_sampler("complex")(model, SingleCoilCartesian(mask), y, s,
                                          generator=torch.Generator().manual_seed(0))
    assert res.x.is_complex() and res.network_calls == 8 and batches == [1] * 8
    torch.testing.assert_close(SingleCoilCartesian(mask).A(res.x), y, atol=1e-2, rtol=1e-4)
    ri = sampling.get_sampler("complex")(model, SingleCoilCartesian(mask), y, s.replace(complex_mode="ri"),
                                         generator=torch.Generator().manual_seed(0))
    assert ri.network_calls == 8 and batches[8:] == [2] * 8


def sense_problem(n_coils: int, size: int = SIZE):
    """(model, SENSE op, y, x): a smooth complex image seen by n_coils toy coils through a column mask."""
    model, mask, phi, x, _ = complex_problem(size)
    op = SENSE(coil_maps(n_coils, size, size), mask)
    return model, op, op.A(x), x


@pytest.mark.parametrize("mode", ["ri", "phase"])
def test_sense_one_network_call_per_step_whatever_the_coils(mode):
    per_call = {"ri": 2, "phase": 1}[mode]
    for n_coils in (2, 6):
        model, op, y, _ = sense_problem(n_coils)
        batches = []
        model.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
        s = sampling.SamplerSettings(N=3, complex_mode=mode, cg_iters=2)
        res = sampling.get_sampler("sense")(model, op, y, s, generator=torch.Generator().manual_seed(0))
        assert res.x.shape == (1, 1, SIZE, SIZE) and res.x.is_complex()
        assert res.network_calls == 6 and batches == [per_call] * 6


@pytest.mark.parametrize("mode", ["ri", "phase"])
def test_sense_cg_fits_the_data(mode):
    model, op, y, x = sense_problem(4)
    zf_res = float(torch.linalg.vector_norm(op.A(op.A_H(y)) - y))
    s = sampling.SamplerSettings(N=5, complex_mode=mode, cg_iters=15, gamma=1e-3)
    res = sampling.get_sampler("sense")(model, op, y, s, generator=torch.Generator().manual_seed(0))
    res_norm = float(torch.linalg.vector_norm(op.A(res.x) - y))
    assert res_norm < 0.02 * float(torch.linalg.vector_norm(y)) and res_norm < 0.1 * zf_res
    # a weak data term (large gamma, no CG) leaves a much larger residual: the check can fail
    weak = sampling.get_sampler("sense")(model, op, y, s.replace(cg_iters=1, gamma=100.0),
                                         generator=torch.Generator().manual_seed(0))
    assert float(torch.linalg.vector_norm(op.A(weak.x) - y)) > 5 * res_norm


def test_hybrid_phase_mode_coil_images_per_call_and_consistent():
    model, op, y, _ = sense_problem(3)
    batches = []
    model.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
    s = sampling.SamplerSettings(N=4, complex_mode="phase", m_steps=2)
    res = sampling.get_sampler("hybrid")(model, op, y, s, generator=torch.Generator().manual_seed(0))
    assert res.x.shape == (1, 3, SIZE, SIZE) and batches == [3] * 8       # C real images, not 2C
    torch.testing.assert_close(MultiCoilCartesian(op.mask).A(res.x), y, atol=1e-3, rtol=1e-4)
    with pytest.raises(ValueError, match="faithful"):
        sampling.get_sampler("hybrid")(model, op, y, s.replace(faithful=True),
                                       generator=torch.Generator().manual_seed(0))


def test_sense_script_end_to_end(tmp_path, tiny, capsys, monkeypatch, mode="phase"):  # noqa: F811
    monkeypatch.setitem(test_cli.SCRIPTS, "SENSE", "inference_multi-coil_SENSE.py")
    np.save(tmp_path / "case.npy", coil_images())
    status, out, err = run_inproc("SENSE", tiny, "--data", str(tmp_path / "case.npy"), "--save_dir",
                                  str(tmp_path / "o"), "--acc_factor", "2", "--center_fraction", "0.5",
                                  "--complex_mode", mode, capsys=capsys)
    assert status == 0, err
    root = tmp_path / "o" / "multi-coil" / "SENSE"
    assert str(root) in out
    recon = np.load(root / "recon" / "case.npy")
    assert recon.shape == (SIZE, SIZE) and np.isfinite(recon).all()
    assert np.load(root / "sens" / "case.npy").shape == (4, SIZE, SIZE)
    rec = json.loads((root / "case_metrics.json").read_text())
    assert rec["complex_mode"] == mode and rec["cg_iters"] == 5 and rec["gamma"] == 0.1
    assert rec["network_calls"] == 4 and np.isfinite(rec["recon"]["psnr"])  # N = 2, corrector + predictor


@pytest.mark.parametrize("mode", ["ri", "phase"])
def test_sense_image_is_zero_outside_the_coil_maps_support(mode):
    model, op, y, _ = sense_problem(4)
    support = torch.ones(1, 1, SIZE, SIZE)
    support[..., :, :3] = 0                                          # maps cropped to zero at the left edge
    op = SENSE(op.sens * support, op.mask)
    s = sampling.SamplerSettings(N=3, complex_mode=mode)
    res = sampling.get_sampler("sense")(model, op, op.A(op.A_H(y)), s, generator=torch.Generator().manual_seed(0))
    assert torch.all(res.x[..., :, :3] == 0) and torch.any(res.x[..., :, 3:] != 0)


@pytest.mark.parametrize("sampler", ["complex", "sense", "hybrid"])
def test_phase_ri_mode_keeps_the_residual_and_the_data(sampler):
    """'phase_ri': two real images per coil and call (both parts of the demodulated image); exact DC."""
    model, op, y, _ = sense_problem(3)
    if sampler == "complex":
        op = SingleCoilCartesian(op.mask)
        y = op.A(torch.randn(1, 1, SIZE, SIZE, dtype=torch.complex64, generator=torch.Generator().manual_seed(3)))
    batches = []
    model.register_forward_hook(lambda mod, inp, out: batches.append(inp[0].shape[0]))
    s = sampling.SamplerSettings(N=3, complex_mode="phase_ri", m_steps=2, cg_iters=20, gamma=1e-3)
    res = sampling.get_sampler(sampler)(model, op, y, s, generator=torch.Generator().manual_seed(0))
    per_call = {"complex": 2, "sense": 2, "hybrid": 6}[sampler]
    assert batches and set(batches) == {per_call}
    assert res.x.is_complex() and res.x.imag.abs().max() > 0
    meas = op.cartesian.A(res.x) if sampler == "hybrid" else op.A(res.x)
    tol = 1e-3 if sampler != "sense" else 0.05
    assert torch.linalg.vector_norm(meas - y) <= tol * torch.linalg.vector_norm(y)


@pytest.mark.parametrize("key, flags, expected", [
    ("SENSE", ("--cg_iters", "3", "--gamma", "0.2"), {"cg_iters": 3, "gamma": 0.2, "complex_mode": "ri"}),
    ("hybrid", ("--m_steps", "2"), {"m_steps": 2}),
])
def test_coil_map_scripts_resolve_their_settings_once(tmp_path, tiny, capsys, monkeypatch, key, flags,  # noqa: F811
                                                      expected):
    """The SENSE / hybrid operator hook records the job's settings instead of resolving them again."""
    from score_mri.samplers.pc_loop import SamplerSettings
    resolved = []
    from_config = SamplerSettings.from_config.__func__

    def counted(cls, *args, **kwargs) -> SamplerSettings:
        """SamplerSettings.from_config, remembering each result."""
        resolved.append(from_config(cls, *args, **kwargs))
        return resolved[-1]

    monkeypatch.setattr(SamplerSettings, "from_config", classmethod(counted))
    monkeypatch.setitem(test_cli.SCRIPTS, "SENSE", "inference_multi-coil_SENSE.py")
    np.save(tmp_path / "case.npy", coil_images())
    status, _, err = run_inproc(key, tiny, "--data", str(tmp_path / "case.npy"), "--save_dir", str(tmp_path / "o"),
                                "--acc_factor", "2", "--center_fraction", "0.5", *flags, capsys=capsys)
    assert status == 0, err
    assert len(resolved) == 1
    rec = json.loads((tmp_path / "o" / "multi-coil" / key / "case_metrics.json").read_text())
    assert {f: rec[f] for f in expected} == expected == {f: getattr(resolved[0], f) for f in expected}


# ---------------------------------------------------------------------------------------------- residual smoothing

@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_gaussian_smooth_is_scipys_mirrored_gaussian(sigma):
    from scipy.ndimage import gaussian_filter
    from score_mri.physics.phase import gaussian_smooth
    x = torch.randn(2, 3, 20, 17, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(gaussian_smooth(x, sigma).numpy(), ref, atol=1e-12)
    const = torch.full((1, 1, 9, 9), 0.7)
    torch.testing.assert_close(gaussian_smooth(const, sigma), const)   # weights sum to one
    assert gaussian_smooth(x, 0.0) is x
    with pytest.raises(TypeError):
        gaussian_smooth(x.to(torch.complex128), sigma)


def test_smooth_residual_smooths_only_the_imaginary_part():
    from score_mri.physics.phase import gaussian_smooth, smooth_residual
    g = torch.Generator().manual_seed(1)
    m = torch.complex(torch.rand(1, 2, 32, 32, generator=g), 0.01 * torch.randn(1, 2, 32, 32, generator=g))
    out = smooth_residual(m, 1.0)
    assert torch.equal(out.real, m.real)
    torch.testing.assert_close(out.imag, gaussian_smooth(m.imag, 1.0))
    assert float(out.imag.std()) < 0.5 * float(m.imag.std())            # white noise: std / (2 sqrt(pi) sigma)
    real = torch.rand(1, 1, 8, 8, generator=g)
    assert smooth_residual(real, 1.0) is real and smooth_residual(m, 0.0) is m


@pytest.mark.parametrize("sampler", ["complex", "sense"])
def test_phase_ri_smooths_the_final_residual_then_restores_the_data(sampler, monkeypatch):
    """The result is P(smooth_residual(m) exp(i phi)): measured k-space exact, the rest from the smoothed m."""
    from score_mri.physics import phase as phase_mod
    from score_mri.samplers import sense as sense_mod
    model, op, y, _ = sense_problem(3)
    if sampler == "complex":
        op = SingleCoilCartesian(op.mask)
        y = op.A(torch.randn(1, 1, SIZE, SIZE, dtype=torch.complex64, generator=torch.Generator().manual_seed(3)))
    seen = []
    monkeypatch.setattr(sense_mod, "smooth_residual", lambda m, s: seen.append((m.clone(), s)) or
                        phase_mod.smooth_residual(m, s))
    s = sampling.SamplerSettings(N=3, complex_mode="phase_ri", cg_iters=20, gamma=1e-3)
    run = lambda st: sampling.get_sampler(sampler)(model, op, y, st, generator=torch.Generator().manual_seed(0)).x
    plain, smoothed = run(s), run(s.replace(residual_smoothing=1.5))
    assert [v for _, v in seen] == [0.0, 1.5]
    m = seen[1][0]
    cg = sense_mod.SenseCG(op, s.gamma, s.cg_iters) if sampler == "sense" else op
    state = PhaseDemodulated(cg, estimate_phase(op, y, op.mask))
    torch.testing.assert_close(smoothed, state.remodulate(phase_mod.smooth_residual(m, 1.5), y))
    torch.testing.assert_close(plain, state.remodulate(m, y))           # same draw: only the last step differs
    assert not torch.allclose(plain, smoothed)
    tol = 1e-3 if sampler != "sense" else 0.05
    assert torch.linalg.vector_norm(op.A(smoothed) - y) <= tol * torch.linalg.vector_norm(y)


def test_residual_smoothing_setting_is_checked_and_read_from_the_config():
    from configs.ve import colin27_ncsnpp_small
    with pytest.raises(ValueError, match="residual_smoothing"):
        sampling.SamplerSettings(residual_smoothing=-1.0)
    with pytest.raises(ValueError, match="residual_smoothing"):
        sampling.SamplerSettings(residual_smoothing=float("inf"))
    config = colin27_ncsnpp_small.get_config()
    assert sampling.SamplerSettings.from_config(config).residual_smoothing == config.sampling.residual_smoothing > 0
    assert sampling.SamplerSettings.from_config(config, residual_smoothing=0.0).residual_smoothing == 0.0


def test_clip_magnitude_clips_the_real_part_only():
    from score_mri.physics.phase import clip_magnitude
    m = torch.complex(torch.tensor([[-1.0, 0.5]]), torch.tensor([[0.3, -0.2]]))
    torch.testing.assert_close(clip_magnitude(m), torch.complex(torch.tensor([[0.0, 0.5]]), m.imag))
    torch.testing.assert_close(clip_magnitude(torch.tensor([-2.0, 3.0])), torch.tensor([0.0, 3.0]))


@pytest.mark.parametrize("mode", ["phase_ri", "phase"])
def test_nonnegative_clips_the_magnitude_before_the_final_data_consistency(mode, monkeypatch):
    """nonnegative: P(clip_magnitude(smooth_residual(m)) exp(i phi)), m the demodulated estimate (real in
    'phase' mode, where the smoothing leaves it unchanged)."""
    from score_mri.physics import phase as phase_mod
    from score_mri.samplers import sense as sense_mod
    model, op, y, _ = sense_problem(3)
    op = SingleCoilCartesian(op.mask)
    y = op.A(torch.randn(1, 1, SIZE, SIZE, dtype=torch.complex64, generator=torch.Generator().manual_seed(3)))
    seen = []
    monkeypatch.setattr(sense_mod, "smooth_residual", lambda m, s: seen.append(m.clone()) or
                        phase_mod.smooth_residual(m, s))
    s = sampling.SamplerSettings(N=3, complex_mode=mode, residual_smoothing=1.0)
    run = lambda st: sampling.get_sampler("complex")(model, op, y, st, generator=torch.Generator().manual_seed(0)).x
    plain, clipped = run(s), run(s.replace(nonnegative=True))
    state = PhaseDemodulated(op, estimate_phase(op, y, op.mask))
    m = phase_mod.smooth_residual(seen[1], 1.0)
    assert m.is_complex() == (mode == "phase_ri")
    assert m.real.min() < 0                                             # the test has something to clip
    torch.testing.assert_close(clipped, state.remodulate(phase_mod.clip_magnitude(m), y))
    assert not torch.allclose(clipped, plain)


def test_finish_after_dc_smooths_and_clips_the_final_image_of_the_complex_sampler(monkeypatch):
    """finish_after_dc: the output is the final data-consistent image, demodulated, finished once more."""
    from score_mri.samplers import sense as sense_mod
    model, mask, phi, x, y = complex_problem()
    base = sampling.SamplerSettings(N=3, complex_mode="phase_ri", residual_smoothing=1.0, nonnegative=True)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    exact = sampling.get_sampler("complex")(model, SingleCoilCartesian(mask), y, base, generator=g()).x
    after = sampling.get_sampler("complex")(model, SingleCoilCartesian(mask), y, base.replace(finish_after_dc=True),
                                            generator=g()).x
    phi_hat = estimate_phase(SingleCoilCartesian(mask), y, mask)
    m = sense_mod._finish_residual(sense_mod.demodulate(exact, phi_hat), base)
    torch.testing.assert_close(after, modulate(m, phi_hat))
    assert float(sense_mod.demodulate(after, phi_hat).real.min()) > -1e-6               # the clip holds at the end
    # the exact run keeps the measured k-space, the finished one departs from it
    op = SingleCoilCartesian(mask)
    assert float(torch.linalg.vector_norm(op.A(exact) - y)) < 1e-3 * float(torch.linalg.vector_norm(y))
    assert float(torch.linalg.vector_norm(op.A(after) - y)) > 1e-3 * float(torch.linalg.vector_norm(y))
    # SENSE keeps its final data consistency last, whatever the setting
    model, sop, sy, _ = sense_problem(4)
    s = base.replace(cg_iters=2)
    a = sampling.get_sampler("sense")(model, sop, sy, s, generator=g()).x
    b = sampling.get_sampler("sense")(model, sop, sy, s.replace(finish_after_dc=True), generator=g()).x
    assert torch.equal(a, b)
