"""Operator building blocks: coil maps and SENSE as a composition, the normal operator, batched complex CG."""
from __future__ import annotations

import torch

from score_mri.physics import operators as ops

DT = torch.complex128


def crandn(shape, seed):
    return torch.randn(*shape, dtype=DT, generator=torch.Generator().manual_seed(seed))


def random_problem(b=2, c=4, h=6, w=8, seed=0):
    sens = crandn((b, c, h, w), seed)
    sens = sens / torch.sqrt(torch.sum(torch.abs(sens) ** 2, dim=1, keepdim=True))
    mask = (torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) < 0.4)
    return ops.SENSE(sens, mask.to(torch.float64))


def inner(a, b):
    return torch.sum(torch.conj(a) * b)


def test_coil_maps_adjoint():
    op = random_problem()
    x, y = crandn((2, 1, 6, 8), 3), crandn((2, 4, 6, 8), 4)
    torch.testing.assert_close(inner(op.maps.A(x), y), inner(x, op.maps.A_H(y)), rtol=1e-12, atol=1e-12)


def test_sense_is_cartesian_after_coil_maps_and_normal_is_composition():
    op = random_problem()
    x = crandn((2, 1, 6, 8), 5)
    cart = ops.MultiCoilCartesian(op.mask)
    torch.testing.assert_close(op.A(x), cart.A(op.sens * x))
    torch.testing.assert_close(op.normal(x), op.A_H(op.A(x)))
    # A^H A is Hermitian positive semi-definite
    v = crandn((2, 1, 6, 8), 6)
    torch.testing.assert_close(inner(v, op.normal(x)), torch.conj(inner(x, op.normal(v))), rtol=1e-12, atol=1e-12)
    assert inner(x, op.normal(x)).real >= 0


def test_cg_reaches_the_direct_solve_of_a_small_spd_system():
    g = torch.Generator().manual_seed(0)
    B, n = 3, 12
    M = torch.randn(B, n, n, dtype=DT, generator=g)
    H = M @ M.conj().transpose(-1, -2) + 0.5 * torch.eye(n, dtype=DT)   # [B, n, n] Hermitian PD
    rhs = torch.randn(B, n, dtype=DT, generator=g)
    x = ops.conjugate_gradient(lambda v: (H @ v.unsqueeze(-1)).squeeze(-1), rhs, torch.zeros_like(rhs), n_iter=60)
    torch.testing.assert_close(x, torch.linalg.solve(H, rhs), rtol=1e-8, atol=1e-8)


def test_cg_batch_elements_are_independent():
    op = random_problem()
    x_hat, y = crandn((2, 1, 6, 8), 7), op.A(crandn((2, 1, 6, 8), 8))
    both = op.solve(x_hat, y, gamma=0.5, n_iter=4)
    first = ops.SENSE(op.sens[:1], op.mask[:1]).solve(x_hat[:1], y[:1], gamma=0.5, n_iter=4)
    torch.testing.assert_close(both[:1], first)


def test_sense_solve_satisfies_the_regularised_normal_equations():
    op = random_problem()
    x_hat, y = crandn((2, 1, 6, 8), 9), op.A(crandn((2, 1, 6, 8), 10))
    gamma = 0.3
    x = op.solve(x_hat, y, gamma=gamma, n_iter=200)
    torch.testing.assert_close(op.normal(x) + gamma * x, op.A_H(y) + gamma * x_hat, rtol=1e-9, atol=1e-9)
    # few iterations already reduce the data residual below that of the starting estimate
    x3 = op.solve(x_hat, y, gamma=gamma, n_iter=3)
    assert torch.linalg.vector_norm(op.A(x3) - y) < torch.linalg.vector_norm(op.A(x_hat) - y)


def test_zero_filled_single_coil_inverts_the_shifted_fft_on_full_mask():
    x = crandn((1, 1, 7, 9), 11)
    op = ops.SingleCoilCartesian(torch.ones(1, 1, 7, 9, dtype=torch.float64))
    torch.testing.assert_close(op.zero_filled(op.A(x)), x)
