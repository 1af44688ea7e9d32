"""The Python API (``score_mri.reconstruct``, ``simulate_mask``, ``SamplerSettings.from_config``) on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import score_mri
from conftest import write_tiny_model
from score_mri import recon
from score_mri.config import load_config
from score_mri.physics.fft import fft2c
from score_mri.physics.masks import MASK_TYPES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 32 x 32 model whose config samples with 3 DDS steps (no corrector)."""
    return write_tiny_model(tmp_path_factory.mktemp("api"), sampling={"N": 3, "predictor": "dds",
                                                                       "corrector": "none"})


def phantom(coils: int = 0) -> np.ndarray:
    """A smooth complex 32 x 32 image, or [coils, 32, 32] coil images with smooth sensitivities."""
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    img = (np.exp(-(xx ** 2 + yy ** 2) * 3) * np.exp(1j * 0.5 * xx)).astype(np.complex64)
    if not coils:
        return img
    sens = np.stack([np.exp(-((xx - np.cos(a)) ** 2 + (yy - np.sin(a)) ** 2)) for a in
                     np.linspace(0, 2 * np.pi, coils, endpoint=False)]).astype(np.complex64)
    sens /= np.sqrt((np.abs(sens) ** 2).sum(0, keepdims=True))
    return sens * img, sens


def test_single_coil_numpy_and_torch_agree_and_keep_units(tiny):
    config, ckpt = tiny
    mask = score_mri.simulate_mask((32, 32), "uniform1d", acc_factor=2, center_fraction=0.25, seed=0)
    assert mask.shape == (32, 32) and mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    k = score_mri.fft2c(phantom()) * mask * 7.0            # units: 7 x the phantom
    a = score_mri.reconstruct(k, mask, config=str(config), ckpt=ckpt, device="cpu")
    b = score_mri.reconstruct(torch.from_numpy(k), torch.from_numpy(mask), config=str(config), ckpt=ckpt,
                              device="cpu")
    assert a.sampler == "complex" and a.network_calls == 3 and a.seconds > 0
    assert a.image.shape == (32, 32) and np.iscomplexobj(a.image)
    np.testing.assert_allclose(a.image, b.image, rtol=0, atol=1e-5 * np.abs(a.image).max())
    np.testing.assert_allclose(a.zero_filled, score_mri.ifft2c(k), rtol=0, atol=1e-4 * np.abs(k).max())
    # data consistency in the input's units: the measured samples come back
    np.testing.assert_allclose(score_mri.fft2c(a.image) * mask, k, rtol=0, atol=1e-3 * np.abs(k).max())


def test_overrides_change_only_what_they_name(tiny):
    config, ckpt = tiny
    k = score_mri.fft2c(phantom()) * score_mri.simulate_mask((32, 32), "uniform1d", 2, 0.25)
    out = score_mri.reconstruct(k, config=str(config), ckpt=ckpt, device="cpu", N=2, sampler="real")
    assert out.network_calls == 2 and out.settings.N == 2 and out.settings.predictor == "dds"
    assert not np.iscomplexobj(out.image)
    with pytest.raises(score_mri.UserError, match="unknown sampler setting"):
        score_mri.reconstruct(k, config=str(config), ckpt=ckpt, device="cpu", n_stepz=2)
    with pytest.raises(score_mri.UserError, match="unknown sampler"):
        score_mri.reconstruct(k, config=str(config), ckpt=ckpt, device="cpu", sampler="radial")


def test_multi_coil_sense_with_given_maps_and_ssos(tiny):
    config, ckpt = tiny
    coils, sens = phantom(coils=4)
    mask = score_mri.simulate_mask((32, 32), "uniform1d", acc_factor=2, center_fraction=0.25, seed=1)
    k = fft2c(torch.from_numpy(coils)).numpy() * mask
    out = score_mri.reconstruct(k, coil_maps=sens, config=str(config), ckpt=ckpt, device="cpu")
    assert out.sampler == "sense" and out.network_calls == 3 and out.image.shape == (32, 32)
    assert np.isfinite(out.image).all()
    ssos = score_mri.reconstruct(k, mask, config=str(config), ckpt=ckpt, device="cpu", sampler="ssos", N=3)
    assert out.settings.N == 3  # the knee config: N_multi_coil (500) applies to the per-coil samplers only
    assert ssos.image.shape == (32, 32) and not np.iscomplexobj(ssos.image) and ssos.network_calls == 3


def test_user_coil_maps_are_taken_at_unit_peak_so_their_global_scale_does_not_matter(tiny):
    """Maps x 5 give the same image as the unit-norm maps (the SENSE image would otherwise shrink 5x and the
    prior see it at the wrong intensity); a spatial weighting of the maps is kept."""
    from score_mri.physics.sens_maps import unit_peak
    config, ckpt = tiny
    coils, sens = phantom(coils=4)
    mask = score_mri.simulate_mask((32, 32), "uniform1d", acc_factor=2, center_fraction=0.25, seed=1)
    k = fft2c(torch.from_numpy(coils)).numpy() * mask
    unit = score_mri.reconstruct(k, coil_maps=sens, config=str(config), ckpt=ckpt, device="cpu")
    scaled = score_mri.reconstruct(k, coil_maps=5 * sens, config=str(config), ckpt=ckpt, device="cpu")
    np.testing.assert_allclose(scaled.image, unit.image, rtol=0, atol=1e-4 * np.abs(unit.image).max())
    t = torch.from_numpy(sens)
    assert unit_peak(t)[0] is t and unit_peak(t)[1] == 1.0                  # unit-norm maps: untouched
    ramp = t * torch.linspace(0.5, 3.0, 32)                                 # a weighting along x, peak 3
    out, factor = unit_peak(ramp)
    assert factor == pytest.approx(3.0, rel=1e-4)
    assert float(torch.sqrt((out.abs() ** 2).sum(0)).max()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(out * factor, ramp)                          # the same maps, one factor


def test_bad_inputs_are_user_errors(tiny):
    config, ckpt = tiny
    with pytest.raises(score_mri.UserError, match="k-space must be"):
        score_mri.reconstruct(np.zeros(32, np.complex64), config=str(config), ckpt=ckpt, device="cpu")
    with pytest.raises(score_mri.UserError, match="samples nothing"):
        score_mri.reconstruct(np.zeros((32, 32), np.complex64), config=str(config), ckpt=ckpt, device="cpu")
    with pytest.raises(score_mri.UserError, match="mask shape"):
        score_mri.reconstruct(np.ones((32, 32), np.complex64), np.ones((16, 16)), config=str(config), ckpt=ckpt,
                              device="cpu")
    with pytest.raises(score_mri.UserError, match="mask type"):
        score_mri.simulate_mask((32, 32), "radial")


def test_settings_from_config_are_the_cli_defaults(tiny):
    config = load_config(tiny[0])
    s = score_mri.SamplerSettings.from_config(config)
    assert (s.N, s.predictor, s.corrector) == (3, "dds", "none")
    assert s.sigma_max == config.model.sigma_max and s.continuous
    assert score_mri.SamplerSettings.from_config(config, N=7, eta=0.5).replace(N=3) == s.replace(eta=0.5)
    knee = config.sampling
    knee.N_multi_coil = 5
    assert score_mri.SamplerSettings.from_config(config, coils=True).N == 5


def test_the_sampler_table_is_the_one_that_runs():
    from score_mri.samplers import sense, table
    assert score_mri.SAMPLERS is table.SAMPLERS
    assert set(score_mri.SAMPLERS) == {"real", "complex", "ssos", "hybrid", "sense"}
    assert score_mri.get_sampler("sense") is sense.sample_sense


def _mask_or_error(build) -> np.ndarray | str:
    """The mask ``build()`` returns, or the message of the UserError it raises."""
    try:
        return np.asarray(build())
    except score_mri.UserError as e:
        return str(e)


@pytest.mark.parametrize("shape", [(24, 24), (24, 40)])
@pytest.mark.parametrize("mask_type", [*MASK_TYPES, "radial"])
def test_api_mask_is_the_cli_mask(mask_type, shape):
    """Same arguments, same mask from the API and the CLI's path (every coil), or the same refusal."""
    args = (mask_type, 4, 0.25, 3)
    api = _mask_or_error(lambda: score_mri.simulate_mask(shape, *args))
    cli = _mask_or_error(lambda: recon.simulate_mask((1, 3, *shape), *args, device="cpu"))
    square_only = mask_type in ("gaussian2d", "uniformrandom2d") and shape[0] != shape[1]
    if mask_type not in MASK_TYPES or square_only:
        assert isinstance(api, str) and api == cli
        return
    assert api.shape == shape and api.dtype == np.float32 and set(np.unique(api)) == {0.0, 1.0}
    assert cli.shape == (1, 3, *shape) and all(np.array_equal(api, coil) for coil in cli[0])
