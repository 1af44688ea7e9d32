"""The seams: a new Fourier operator is one class plus its registration; every CG user goes through
``LinearOperator.solve``; start noise is shaped from A^H y; callbacks see the denoised estimate."""
from __future__ import annotations

import torch

from score_mri.physics import operators as ops
from score_mri.physics.fft import fft2c, ifft2c
from score_mri.samplers.pc_loop import SamplerSettings
from score_mri.samplers.table import get_sampler


class PointSamples(ops.LinearOperator):
    """A toy non-Cartesian Fourier operator: k-space [B, C, K] at K scattered points of the centered FFT."""

    def __init__(self, shape: tuple[int, int], k: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.shape, self.idx = shape, torch.randperm(shape[0] * shape[1], generator=g)[:k]

    def A(self, x: torch.Tensor) -> torch.Tensor:
        """Samples of fft2c(x) at the points: [B, C, H, W] -> [B, C, K]."""
        return fft2c(x).reshape(*x.shape[:2], -1)[..., self.idx]

    def A_H(self, y: torch.Tensor) -> torch.Tensor:
        """Adjoint: scatter onto the grid, then ifft2c: [B, C, K] -> [B, C, H, W]."""
        grid = torch.zeros(*y.shape[:2], self.shape[0] * self.shape[1], dtype=y.dtype)
        grid[..., self.idx] = y
        return ifft2c(grid.reshape(*y.shape[:2], *self.shape))


def test_registered_fourier_operators() -> None:
    assert ops.get_fourier("cartesian") is ops.MultiCoilCartesian
    assert ops.get_fourier("cartesian_single") is ops.SingleCoilCartesian
    name = "test_point_samples"
    if name not in ops.FOURIER_OPERATORS:
        ops.register_fourier(PointSamples, name=name)
    assert ops.get_fourier(name) is PointSamples


def _maps(coils: int, shape: tuple[int, int]) -> torch.Tensor:
    """Smooth normalised coil maps [1, C, H, W]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, shape[0]), torch.linspace(-1, 1, shape[1]), indexing="ij")
    s = torch.stack([torch.exp(-((xx - c) ** 2 + yy ** 2)) * torch.exp(1j * c * yy) for c in
                     torch.linspace(-1, 1, coils)]).to(torch.complex64)
    return (s / torch.sqrt((s.abs() ** 2).sum(0, keepdim=True)))[None]


def test_sense_composes_any_fourier_operator_and_solve_fits_the_data() -> None:
    shape, coils = (16, 16), 3
    op = ops.SENSE(_maps(coils, shape), PointSamples(shape, 120))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, *shape, generator=g, dtype=torch.complex64)
    y = torch.randn(1, coils, 120, generator=g, dtype=torch.complex64)
    lhs = torch.vdot(op.A(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.A_H(y).flatten())
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-4)            # adjoint pair
    truth = torch.randn(1, 1, *shape, generator=g, dtype=torch.complex64)
    meas = op.A(truth)
    fit = op.solve(torch.zeros_like(truth), meas, gamma=1e-6, n_iter=100)
    assert (op.A(fit) - meas).norm() < 1e-2 * meas.norm()                 # CG on the normal operator
    # a Cartesian operator solves through the same base method
    cart = ops.MultiCoilCartesian(torch.ones(1, 1, *shape))
    xc = torch.randn(1, 2, *shape, generator=g, dtype=torch.complex64)
    torch.testing.assert_close(cart.solve(torch.zeros_like(xc), cart.A(xc), 0.0, 20), xc, rtol=1e-4, atol=1e-4)


class ZeroScore(torch.nn.Module):
    """A 'network' whose score is zero (Tweedie leaves the state as it is)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_sense_sampler_runs_on_a_non_cartesian_operator_and_callbacks_see_x0() -> None:
    shape, coils = (16, 16), 3
    op = ops.SENSE(_maps(coils, shape), PointSamples(shape, 150))
    truth = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.complex64)
    y = op.A(truth)                                                        # [1, C, K]: not image-shaped
    seen = []
    settings = SamplerSettings(N=4, predictor="dds", corrector="none", sigma_max=10.0, cg_iters=30, gamma=1e-3)
    out = get_sampler("sense")(ZeroScore(), op, y, settings, generator=torch.Generator().manual_seed(0),
                               callback=lambda i, n, x0: seen.append(x0.clone()))
    assert out.x.shape == (1, 1, *shape) and torch.isfinite(torch.view_as_real(out.x)).all()
    assert len(seen) == 4
    torch.testing.assert_close(seen[-1], out.x)                           # the last frame is the result (x0)
    assert (op.A(out.x) - y).norm() < 0.1 * y.norm()                      # data-consistent


def test_prospective_kspace_problem_carries_the_measured_data() -> None:
    import numpy as np
    from pathlib import Path

    from score_mri.io.readers import InputKind, problem_from_kspace

    g = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.float32)
    mask[:, [0, 3, 6, 7, 8, 9, 12]] = 1                                   # columns, centre included
    ksp = ((g.standard_normal((4, 16, 16)) + 1j * g.standard_normal((4, 16, 16))) * mask).astype(np.complex64)
    p = problem_from_kspace(ksp, None, "x", Path("x.cfl"), None, InputKind("multi-coil", coils=True,
                                                                            real_valued=False), None)
    assert p.task == "prospective" and p.kspace is not None
    np.testing.assert_allclose(p.kspace * p.scale, ksp, rtol=1e-6, atol=1e-6)
    k = torch.from_numpy(p.kspace)[None]
    m = torch.from_numpy(p.mask).expand(1, 4, 16, 16)
    assert torch.equal(ops.MultiCoilCartesian(m).measured(k), k * m)      # taken as it is, no transform
    single = ops.SingleCoilCartesian(m[:, :1])                           # the same data in the shifted FFT's units
    torch.testing.assert_close(single.zero_filled(single.measured(k[:, :1])), ifft2c(k[:, :1]), rtol=1e-5,
                               atol=1e-6)
