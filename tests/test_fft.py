"""FFT conventions: fastMRI centered orthonormal FFT vs NumPy, the original single-coil
shifted FFT, and the golden values in ``dc_golden.pt`` on odd (7x9) and even (8x10) sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_golden

import fastmri_utils
import utils

SHAPES = [(2, 3, 8, 10), (1, 2, 7, 9), (3, 5, 6), (1, 1, 1, 4)]


def crandn(shape, dtype=torch.complex128, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- shifts

@pytest.mark.parametrize("n", [1, 2, 5, 6, 7])
@pytest.mark.parametrize("shift", [-9, -3, -1, 0, 1, 2, 4, 13])
def test_roll_matches_numpy(n, shift):
    x = np.arange(3 * n).reshape(3, n)
    ours = fastmri_utils.roll(torch.from_numpy(x), [shift], [1])
    np.testing.assert_array_equal(ours.numpy(), np.roll(x, shift, axis=1))


def test_roll_several_dims_matches_numpy():
    x = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    ours = fastmri_utils.roll(torch.from_numpy(x), [1, -7], [0, 2])
    np.testing.assert_array_equal(ours.numpy(), np.roll(x, (1, -7), axis=(0, 2)))
    with pytest.raises(ValueError):
        fastmri_utils.roll(torch.from_numpy(x), [1], [0, 1])


@pytest.mark.parametrize("shape", [(4, 6), (5, 7), (4, 7), (1, 3)])
def test_fftshift_ifftshift_match_numpy(shape):
    x = np.arange(int(np.prod(shape))).reshape(shape)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(fastmri_utils.fftshift(t, dim=(-2, -1)).numpy(), np.fft.fftshift(x))
    np.testing.assert_array_equal(fastmri_utils.ifftshift(t, dim=(-2, -1)).numpy(), np.fft.ifftshift(x))
    np.testing.assert_array_equal(fastmri_utils.fftshift(t).numpy(), np.fft.fftshift(x))
    np.testing.assert_array_equal(fastmri_utils.ifftshift(fastmri_utils.fftshift(t)).numpy(), x)


# ---------------------------------------------------------------------------------------------- fft2c vs numpy

@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_matches_numpy(shape):
    x = crandn(shape)
    expected = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"),
                               axes=(-2, -1))
    np.testing.assert_allclose(fastmri_utils.fft2c(x).numpy(), expected, rtol=1e-12, atol=1e-12)
    expected_inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"),
                                   axes=(-2, -1))
    np.testing.assert_allclose(fastmri_utils.ifft2c(x).numpy(), expected_inv, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_real_view_matches_complex(shape):
    x = crandn(shape)
    data = torch.view_as_real(x)  # [..., H, W, 2]
    assert torch.equal(fastmri_utils.fft2c_new(data), torch.view_as_real(fastmri_utils.fft2c(x)))
    assert torch.equal(fastmri_utils.ifft2c_new(data), torch.view_as_real(fastmri_utils.ifft2c(x)))
    with pytest.raises(ValueError):
        fastmri_utils.fft2c_new(torch.zeros(4, 4, 3))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_roundtrips_and_parseval(shape, dtype):
    x = crandn(shape, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.complex64 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fastmri_utils.ifft2c(fastmri_utils.fft2c(x)), x, **tol)
    torch.testing.assert_close(fastmri_utils.fft2c(fastmri_utils.ifft2c(x)), x, **tol)
    torch.testing.assert_close(utils.ifft2(utils.fft2(x)), x, **tol)
    torch.testing.assert_close(utils.fft2(utils.ifft2(x)), x, **tol)
    # orthonormal: energy preserved; the single-coil fft2 is unnormalised: energy scaled by H*W
    energy = torch.sum(torch.abs(x) ** 2)
    torch.testing.assert_close(torch.sum(torch.abs(fastmri_utils.fft2c(x)) ** 2), energy, **tol)
    hw = shape[-1] * shape[-2]
    torch.testing.assert_close(torch.sum(torch.abs(utils.fft2(x)) ** 2) / hw, energy, **tol)


def test_fft2c_rejects_real_input():
    with pytest.raises(TypeError):
        fastmri_utils.fft2c(torch.zeros(4, 4))
    with pytest.raises(TypeError):
        fastmri_utils.ifft2c(torch.zeros(4, 4))


@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_single_coil_fft2_convention_vs_numpy(shape):
    # fft2 = fftshift(F x) with NO ifftshift before; ifft2 = F^-1 ifftshift(k) with NO fftshift after
    x = crandn(shape)
    np.testing.assert_allclose(utils.fft2(x).numpy(), np.fft.fftshift(np.fft.fft2(x.numpy())), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(utils.ifft2(x).numpy(), np.fft.ifft2(np.fft.ifftshift(x.numpy())), rtol=1e-12,
                               atol=1e-12)


# ---------------------------------------------------------------------------------------------- golden values

@pytest.mark.parametrize("key", ["2x3x8x10", "1x2x7x9"])
@pytest.mark.parametrize("suffix,dtype", [("", torch.complex64), ("_c128", torch.complex128)])
def test_fft_golden(reference, key, suffix, dtype):
    golden = reference("dc_golden.pt")
    z = golden[f"z_{key}"].to(dtype)
    for name, fn in [("fft2", utils.fft2), ("ifft2", utils.ifft2), ("fft2_m", utils.fft2_m),
                     ("ifft2_m", utils.ifft2_m)]:
        expected = golden[f"{name}_{key}{suffix}"]
        out = fn(z)
        assert out.dtype == expected.dtype, name
        assert_golden(out, expected)
    if suffix == "":
        assert_golden(utils.fft2(z.real), golden[f"fft2_real_input_{key}"])
