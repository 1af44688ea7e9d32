"""Measurement operators and data-consistency steps:
adjointness, projection properties, the SENSE step, and the golden DC steps of Algorithms 2-5."""
from __future__ import annotations

import pytest
import torch
from conftest import assert_golden

import utils

SHAPES = [(2, 1, 8, 10), (1, 1, 7, 9), (2, 1, 6, 5)]
DT = torch.complex128


def gen(seed):
    return torch.Generator().manual_seed(seed)


def crandn(shape, seed):
    return torch.randn(*shape, dtype=DT, generator=gen(seed))


def random_mask(shape, seed, p=0.4):
    return (torch.rand(*shape, generator=gen(seed), dtype=torch.float64) < p).to(torch.float64)


def inner(a, b):
    """<a, b> = sum conj(a) b."""
    return torch.sum(torch.conj(a) * b)


def random_sens(b, c, h, w, seed):
    """Coil maps normalised so that sum_c |S_c|^2 = 1 (as ESPIRiT maps inside the support)."""
    s = crandn((b, c, h, w), seed)
    return s / torch.sqrt(torch.sum(torch.abs(s) ** 2, dim=1, keepdim=True))


def make_ops(shape, seed=0, coils=4):
    b, _, h, w = shape
    mask = random_mask((b, 1, h, w), seed)
    sens = random_sens(b, coils, h, w, seed + 1)
    return {
        "single": (utils.SingleCoilCartesian(mask), shape, shape),
        "multi": (utils.MultiCoilCartesian(mask), (b, coils, h, w), (b, coils, h, w)),
        "sense": (utils.SENSE(sens, mask), shape, (b, coils, h, w)),
    }


# ---------------------------------------------------------------------------------------------- properties

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["single", "multi", "sense"])
def test_adjointness(shape, name):
    op, x_shape, y_shape = make_ops(shape)[name]
    x = crandn(x_shape, 10)
    y = crandn(y_shape, 11)
    Ax = op.A(x)
    AHy = op.A_H(y)
    assert Ax.shape == y_shape and AHy.shape == x_shape
    torch.testing.assert_close(inner(Ax, y), inner(x, AHy), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ["single", "multi"])
def test_projection_idempotent_and_keeps_measurements(shape, name):
    op, x_shape, _ = make_ops(shape)[name]
    x_true = crandn(x_shape, 20)
    y = op.A(x_true)  # masked measurements
    x = crandn(x_shape, 21)
    px = op.project(x, y)
    torch.testing.assert_close(op.project(px, y), px, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.A(px), y, rtol=1e-12, atol=1e-12)
    # unmeasured k-space is untouched: the projection changes x only where the mask samples
    fwd = utils.fft2 if name == "single" else utils.fft2_m
    torch.testing.assert_close((1 - op.mask) * fwd(px), (1 - op.mask) * fwd(x), rtol=1e-12, atol=1e-12)
    # consistent images are fixed points
    torch.testing.assert_close(op.project(x_true, y), x_true, rtol=1e-12, atol=1e-12)


def test_single_coil_adjoint_is_scaled_inverse():
    # A_H differs from the original's ifft2 (used by project) exactly by H*W
    mask = torch.ones(1, 1, 7, 9, dtype=torch.float64)
    op = utils.SingleCoilCartesian(mask)
    y = crandn((1, 1, 7, 9), 3)
    torch.testing.assert_close(op.A_H(y), 63 * utils.ifft2(y))


def test_sense_kaczmarz_reduces_residual():
    shape = (1, 1, 8, 10)
    op = make_ops(shape, coils=5)["sense"][0]
    x_true = crandn(shape, 30)
    y = op.A(x_true)
    x = crandn(shape, 31)
    residual = torch.linalg.vector_norm(y - op.A(x))
    for lamb in (1.0, 0.5):
        x_new = op.kaczmarz(x, y, lamb)
        torch.testing.assert_close(x_new, x + lamb * op.A_H(y - op.A(x)))
        assert torch.linalg.vector_norm(y - op.A(x_new)) < residual
    # with the full mask and sum_c |S_c|^2 = 1 one step with lamb = 1 is exact
    full = utils.SENSE(op.sens, torch.ones_like(op.mask))
    torch.testing.assert_close(full.kaczmarz(x, full.A(x_true), 1.0), x_true, rtol=1e-12, atol=1e-12)


def test_sense_kaczmarz_coils_takes_the_sense_step_on_the_combined_image():
    shape = (2, 1, 6, 5)
    op = make_ops(shape, coils=4)["sense"][0]
    y = op.A(crandn(shape, 40))
    x_coils = crandn((2, 4, 6, 5), 41)
    lamb = 0.7
    out = op.kaczmarz_coils(x_coils, y, lamb)
    assert out.shape == x_coils.shape
    # combined image takes exactly the SENSE step (sum_c |S_c|^2 = 1)
    torch.testing.assert_close(op.combine(out), op.kaczmarz(op.combine(x_coils), y, lamb))
    # the part of each coil image outside the range of S is kept
    proj = lambda v: v - op.expand(op.combine(v))  # noqa: E731
    torch.testing.assert_close(proj(out), proj(x_coils))
    # coil-consistent images S x stay coil-consistent and follow the image step
    x = crandn(shape, 42)
    torch.testing.assert_close(op.kaczmarz_coils(op.expand(x), y, lamb), op.expand(op.kaczmarz(x, y, lamb)))


def test_kaczmarz_original_broadcasts_one_update_to_all_coils():
    shape = (1, 1, 6, 5)
    op = make_ops(shape, coils=3)["sense"][0]
    y = op.A(crandn(shape, 50))
    x_coils = crandn((1, 3, 6, 5), 51)
    out = utils.kaczmarz_original(x_coils, y, op.sens, op.mask, 0.5)
    update = out - x_coils
    assert torch.allclose(update[:, 0], update[:, 1]) and torch.allclose(update[:, 0], update[:, 2])


def test_data_consistency_helpers():
    shape = (1, 1, 8, 8)
    op = make_ops(shape)["single"][0]
    y = op.A(crandn(shape, 60))
    x, x_mean = crandn(shape, 61).real, crandn(shape, 62).real
    a, b = utils.data_consistency(op, x, x_mean, y)
    torch.testing.assert_close(a, op.project(x, y))
    torch.testing.assert_close(b, op.project(x_mean, y))
    xr, xr_mean = utils.data_consistency_real(op, x, y)
    assert not xr.is_complex()
    torch.testing.assert_close(xr, op.project(x, y).real)
    torch.testing.assert_close(xr_mean, op.project(xr, y).real)  # original: x_mean from the projected x
    _, fixed_mean = utils.data_consistency_real(op, x, y, x_mean=x_mean)
    torch.testing.assert_close(fixed_mean, op.project(x_mean, y).real)


# ---------------------------------------------------------------------------------------------- golden values

@pytest.fixture(scope="module")
def golden(reference):
    return reference("dc_golden.pt")


def exact(actual, expected):
    assert_golden(actual, expected)


def test_alg2_fast_golden(golden):
    g = golden["alg2_fast"]
    op = utils.SingleCoilCartesian(g["mask"])
    exact(op.A(g["img"]), g["Fy"])
    x, x_mean = utils.data_consistency_real(op, g["x_in"], g["Fy"])
    exact(x, g["x_out"])
    exact(x_mean, g["x_mean_out"])


def test_alg3_RI_golden(golden):
    g = golden["alg3_RI"]
    op = utils.SingleCoilCartesian(g["mask"])
    exact(op.A(g["img"]), g["Fy"])
    x, x_mean = utils.data_consistency(op, g["x_in"], g["x_mean_in"], g["Fy"])
    exact(x, g["x_out"])
    exact(x_mean, g["x_mean_out"])


def test_alg4_SSOS_golden(golden):
    g = golden["alg4_SSOS_coil3"]
    c = g["coil"]
    exact(utils.MultiCoilCartesian(g["mask"]).A(g["img"]), g["y"])
    op = utils.MultiCoilCartesian(g["mask"][0, 0])  # the original uses the first coil's mask for every coil
    x, x_mean = utils.data_consistency(op, g["x_in"], g["x_mean_in"], g["y"][:, c:c + 1])
    exact(x, g["x_out"])
    exact(x_mean, g["x_mean_out"])


def test_alg5_hybrid_golden(golden):
    g = golden["alg5_hybrid"]
    op = utils.SENSE(g["sens"], g["mask"])
    exact(op.A(g["x_in"]), g["A_x"])  # the original applies A to the coil stack elementwise
    exact(op.A_H(g["y"]), g["A_H_y"])
    exact(utils.kaczmarz_original(g["x_in"], g["y"], g["sens"], g["mask"], g["lamb"]), g["kaczmarz_x"])
    exact(utils.kaczmarz_original(g["x_mean_in"], g["y"], g["sens"], g["mask"], g["lamb"]),
          g["kaczmarz_x_mean"])
    # the fixed step differs from the original's on the same input
    fixed = op.kaczmarz_coils(g["x_in"], g["y"], g["lamb"])
    assert not torch.allclose(fixed, g["kaczmarz_x"])
