"""Image helpers, lambda schedules, data scalers and the checkpoint re-export in ``utils``."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from conftest import assert_golden

import utils


@pytest.fixture(scope="module")
def golden(reference):
    return reference("dc_golden.pt")


# ---------------------------------------------------------------------------------------------- RSS

def test_rss_golden(golden):
    x = golden["rss_in"]
    out = utils.root_sum_of_squares(x, dim=1)
    assert out.dtype == torch.float32 and out.shape == golden["rss_abs_dim1"].shape
    assert_golden(out, golden["rss_abs_dim1"])
    # the original's sqrt(sum x^2) on complex data (golden rss_dim1) is a different, complex quantity
    assert golden["rss_dim1"].is_complex()
    assert not torch.allclose(golden["rss_dim1"].abs(), out)


def test_rss_properties():
    x = torch.randn(2, 4, 5, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    out = utils.root_sum_of_squares(x, dim=1)
    torch.testing.assert_close(out ** 2, torch.sum(x.real ** 2 + x.imag ** 2, dim=1))
    real = x.real
    torch.testing.assert_close(utils.root_sum_of_squares(real, dim=0), torch.sqrt(torch.sum(real ** 2, dim=0)))


# ---------------------------------------------------------------------------------------------- normalisation

def test_normalize_complex_original_golden(golden):
    out = utils.normalize_complex_original(golden["normalize_complex_in"])
    assert_golden(out, golden["normalize_complex_out"])


def test_normalize_complex_keeps_phase():
    x = torch.randn(1, 3, 5, 6, dtype=torch.complex128, generator=torch.Generator().manual_seed(1)) * 7
    x_in = x.clone()
    out = utils.normalize_complex(x)
    assert torch.equal(x, x_in)  # not in place
    mag = torch.abs(x)
    torch.testing.assert_close(torch.abs(out), (mag - mag.min()) / (mag.max() - mag.min()))
    assert torch.abs(out).min().item() == pytest.approx(0.0, abs=1e-15)
    assert torch.abs(out).max().item() == pytest.approx(1.0)
    nonzero = torch.abs(out) > 1e-12
    torch.testing.assert_close(torch.angle(out)[nonzero], torch.angle(x)[nonzero])
    # the original squashes the phase into [0, 1] instead
    assert torch.angle(utils.normalize_complex_original(x)).min() >= 0


def test_normalize_and_normalize_np():
    x = torch.tensor([[-2.0, 0.0], [1.0, 6.0]])
    x_in = x.clone()
    torch.testing.assert_close(utils.normalize(x), torch.tensor([[0.0, 0.25], [0.375, 1.0]]))
    assert torch.equal(x, x_in)
    a = np.array([3.0, 5.0, 4.0])
    np.testing.assert_allclose(utils.normalize_np(a), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(a, [3.0, 5.0, 4.0])
    assert torch.equal(utils.normalize(torch.full((2, 2), 3.0)), torch.zeros(2, 2))
    np.testing.assert_array_equal(utils.normalize_np(np.full(3, 2.0)), np.zeros(3))


def test_crop_center_and_clear():
    img = torch.arange(2 * 6 * 7).reshape(2, 6, 7)
    crop = utils.crop_center(img, 3, 4)
    assert crop.shape == (2, 4, 3)
    assert torch.equal(crop, img[:, 1:5, 2:5])
    arr = utils.clear(torch.ones(1, 1, 3, 2, requires_grad=True))
    assert isinstance(arr, np.ndarray) and arr.shape == (3, 2)


# ---------------------------------------------------------------------------------------------- lambda schedules

def test_lambda_linear_golden(golden):
    schedule = utils.lambda_schedule_linear(start_lamb=1.0, end_lamb=0.2, total=2000)
    table = golden["lambda_linear_1_to_0.2_at_i"]
    assert len(table) == 8
    for i, value in table.items():
        assert schedule.get_current_lambda(int(i)) == value  # exact, same arithmetic order


def test_lambda_schedules():
    default = utils.lambda_schedule_linear()
    assert default.total == 2000 and default.get_current_lambda(0) == 1.0
    assert default.get_current_lambda(500) == pytest.approx(0.8)  # the original's quirk at N = 500
    scaled = utils.lambda_schedule_linear(1.0, 0.2, total=500)
    assert scaled.get_current_lambda(500) == pytest.approx(0.2)
    assert scaled.get_current_lambda(250) == pytest.approx(0.6)
    const = utils.lambda_schedule_const(lamb=0.3)
    assert [const.get_current_lambda(i) for i in (0, 7, 1999)] == [0.3, 0.3, 0.3]
    with pytest.raises(NotImplementedError):
        utils.lambda_schedule().get_current_lambda(0)


# ---------------------------------------------------------------------------------------------- scalers / checkpoint

def _config(centered):
    return types.SimpleNamespace(data=types.SimpleNamespace(centered=centered))


def test_data_scalers():
    x = torch.tensor([0.0, 0.25, 1.0])
    scaler, inverse = utils.get_data_scaler(_config(True)), utils.get_data_inverse_scaler(_config(True))
    torch.testing.assert_close(scaler(x), torch.tensor([-1.0, -0.5, 1.0]))
    torch.testing.assert_close(inverse(scaler(x)), x)
    scaler, inverse = utils.get_data_scaler(_config(False)), utils.get_data_inverse_scaler(_config(False))
    assert torch.equal(scaler(x), x) and torch.equal(inverse(x), x)


def test_restore_checkpoint_reexport(monkeypatch):
    import models.checkpoint as checkpoint
    calls = []
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: calls.append((a, k)) or "ok")
    assert utils.restore_checkpoint("ckpt.pth", "model", device="cpu") == "ok"
    assert calls == [(("ckpt.pth", "model"), {"device": "cpu"})]
