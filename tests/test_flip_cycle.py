"""Flip cycling of the network input (``SamplerSettings.flip_cycle``): call k sees its input flipped by
``FLIP_CYCLE[k % 4]`` and returns the score flipped back.

Properties: the flips of each call and their inverse; a flip-symmetric prior gives the same reconstruction
with and without the cycle (the true score commutes with the flips); a prior that is not flip-symmetric
gives a different one; ``faithful`` ignores the setting; the embedded config and the CLI turn it on and off.
"""
from __future__ import annotations

import argparse

import pytest
import torch

import sampling
from score_mri.cli import flags
from score_mri.physics.operators import SENSE, SingleCoilCartesian
from score_mri.samplers.pc_loop import FLIP_CYCLE, CountingScore
from test_sampling import ToyGaussianScore, coil_maps, column_mask, smooth_image, symmetric_mask

S = 0.2


def ramp_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A score that depends on the pixel position (not flip-symmetric): x times a ramp plus the ramp."""
    h, w = x.shape[-2:]
    ramp = torch.arange(h * w, dtype=x.dtype).reshape(h, w) / (h * w)
    return x * ramp + ramp


def test_each_call_sees_its_flip_and_gets_the_score_flipped_back():
    """Call k returns flip_k(s(flip_k(x))), k mod 4 cycling none, left-right, up-down, both; off: s(x)."""
    x = torch.randn(2, 1, 5, 7, generator=torch.Generator().manual_seed(0))
    t = torch.ones(2)
    cycling, plain = CountingScore(ramp_score, None, flip_cycle=True), CountingScore(ramp_score, None)
    assert FLIP_CYCLE == ((), (-1,), (-2,), (-2, -1))
    for k in range(6):
        dims = FLIP_CYCLE[k % 4]
        expected = torch.flip(ramp_score(torch.flip(x, dims), t), dims) if dims else ramp_score(x, t)
        torch.testing.assert_close(cycling(x, t), expected, rtol=0, atol=0)
        torch.testing.assert_close(plain(x, t), ramp_score(x, t), rtol=0, atol=0)
        if k % 4:
            assert not torch.allclose(expected, ramp_score(x, t))  # the flip matters for this score
    assert cycling.calls == plain.calls == 6


def test_chunked_calls_flip_the_whole_batch_alike():
    """With ``max_batch`` the chunks of one call share that call's flip."""
    x = torch.randn(5, 1, 4, 6, generator=torch.Generator().manual_seed(1))
    t = torch.ones(5)
    whole, chunked = CountingScore(ramp_score, None, flip_cycle=True), CountingScore(ramp_score, 2, flip_cycle=True)
    for _ in range(4):
        torch.testing.assert_close(chunked(x, t), whole(x, t), rtol=0, atol=0)


def _settings(**kw) -> sampling.SamplerSettings:
    """The few-step settings on the toy noise range."""
    return sampling.SamplerSettings(N=6, predictor="dds", corrector="none", sigma_min=0.01, sigma_max=20.0, **kw)


def _problem(sampler: str, mu: torch.Tensor):
    """(op, y) of a toy problem whose truth is mu plus noise (SENSE: 3 coils)."""
    size = mu.shape[-1]
    truth = (mu + S * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(2))).to(torch.complex64)
    if sampler == "sense":
        sens, mask = coil_maps(3, size, size), column_mask(size, size, 0)
        op = SENSE(sens, mask)
    else:
        op = SingleCoilCartesian(symmetric_mask(size, size, 3))
    return op, op.A(truth)


def _run(sampler: str, mu: torch.Tensor, **kw) -> torch.Tensor:
    op, y = _problem(sampler, mu)
    return sampling.get_sampler(sampler)(ToyGaussianScore(mu, S), op, y, _settings(**kw),
                                         generator=torch.Generator().manual_seed(0)).x


def _symmetric_mean(size: int) -> torch.Tensor:
    """A smooth mean that both flips leave unchanged."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.exp(-3 * (xx ** 2 + yy ** 2)).reshape(1, 1, size, size)


@pytest.mark.parametrize("sampler", ["real", "complex", "sense"])
def test_flip_symmetric_prior_gives_the_same_reconstruction(sampler):
    """The exact score of a flip-symmetric Gaussian commutes with the flips: the cycle changes nothing."""
    mu = _symmetric_mean(16)
    assert torch.equal(torch.flip(mu, (-1,)), mu) and torch.equal(torch.flip(mu, (-2,)), mu)
    off, on = _run(sampler, mu), _run(sampler, mu, flip_cycle=True)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler", ["real", "complex", "sense"])
def test_prior_without_the_symmetry_gives_another_reconstruction(sampler):
    """A prior centred on a lopsided mean sees the flipped image on 3 of 4 calls: the output changes."""
    mu = smooth_image(16, 16)
    off, on = _run(sampler, mu), _run(sampler, mu, flip_cycle=True)
    assert float(torch.abs(on - off).max()) > 1e-3


def test_faithful_ignores_the_flip_cycle():
    """``faithful`` reproduces the original's numerics: the setting has no effect there."""
    mu = smooth_image(16, 16)
    op, y = _problem("real", mu)
    base = sampling.SamplerSettings(N=10, sigma_min=0.01, sigma_max=20.0, faithful=True)
    out = [sampling.get_sampler("real")(ToyGaussianScore(mu, S), op, y, base.replace(flip_cycle=fc),
                                        generator=torch.Generator().manual_seed(0)).x for fc in (False, True)]
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=0)


def _resolve(argv: list[str]) -> sampling.SamplerSettings:
    parser = flags.build_parser("test")
    args = parser.parse_args(["--data", "x.npy", *argv])
    return flags.resolve(args, flags.load_config(str(flags.DEFAULT_CONFIG)))[0]


def test_embedded_config_cycles_and_the_flag_turns_it_off():
    """The embedded config's sampling group turns the cycle on; ``--no-flip_cycle`` restores the paper's sampler."""
    assert _resolve([]).flip_cycle is True
    assert _resolve(["--no-flip_cycle"]).flip_cycle is False
    assert isinstance(flags.build_parser("test").parse_args(["--data", "x", "--flip_cycle"]), argparse.Namespace)
    assert sampling.SamplerSettings().flip_cycle is False  # the paper's sampler is the library default
