"""op/_jit.py: which path runs on a CUDA tensor (build, parity self-check, fallback, SCORE_MRI_CUDA_OPS).

These run without a GPU: "CUDA present" is simulated by treating CPU tensors as CUDA tensors, and the
JIT build is replaced by fake extensions (correct, wrong, crashing) or by a build that fails.
"""
from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from op import CudaOpsError, CudaOpsWarning, _jit, fused_leaky_relu, upfirdn2d

upfirdn2d_mod = importlib.import_module("op.upfirdn2d")
fused_act_mod = importlib.import_module("op.fused_act")


class FakeUpfirdn2d:
    """Stands in for the compiled upfirdn2d extension; ``error`` selects a defect."""

    def __init__(self, error: str | None = None):
        self.error, self.calls = error, 0

    def upfirdn2d(self, x, k, *args):
        self.calls += 1
        if self.error == "crash":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if self.error == "unflipped":  # correlation instead of convolution
            k = torch.flip(k, [0, 1])
        out = upfirdn2d_mod.upfirdn2d_native(x, k, *args)
        if self.error == "scaled":
            out = out * (1 + 1e-3)
        if self.error == "nan":
            out = out.clone()
            out.view(-1)[0] = float("nan")
        return out


class FakeFusedAct:
    """Stands in for the compiled fused_bias_act extension; ``error`` selects a defect."""

    def __init__(self, error: str | None = None):
        self.error, self.calls = error, 0

    def fused_bias_act(self, x, b, slope, scale):
        self.calls += 1
        v = x.float() + (b.float().reshape(1, -1, *([1] * (x.ndim - 2))) if b.numel() else 0.0)
        return (torch.where(v > 0, v, v * slope) * scale).to(x.dtype)

    def fused_bias_act_grad(self, g, y, slope, scale):
        self.calls += 1
        factor = scale if self.error == "grad_ignores_slope" else slope * scale
        return (g.float() * torch.where(y.float() > 0, scale, factor)).to(g.dtype)


@pytest.fixture
def cuda_sim(monkeypatch):
    """CUDA 'present', CPU tensors routed as CUDA tensors, fresh per-process decisions, no env override."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_jit, "on_cuda", lambda x: x.dtype in _jit.CUDA_DTYPES)
    monkeypatch.setattr(_jit, "check_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(_jit, "_STATE", {})
    monkeypatch.setattr(_jit, "_override", None)
    monkeypatch.delenv(_jit.ENV_VAR, raising=False)
    for mod in (upfirdn2d_mod, fused_act_mod):
        monkeypatch.setattr(mod, "_cuda_module", None)
    return monkeypatch


def use_build(monkeypatch, up=None, act=None, fail: str | None = None) -> list[str]:
    """Replace the JIT build: fake extensions, or a build that raises ``fail``; returns the build log."""
    built: list[str] = []

    def fake_build(name, sources):
        built.append(name)
        if fail is not None:
            raise RuntimeError(fail + "\nninja: build stopped: subcommand failed.")
        return {upfirdn2d_mod.EXTENSION: up, fused_act_mod.EXTENSION: act}[name]

    monkeypatch.setattr(_jit, "build", fake_build)
    return built


def inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3, 8, 8, generator=g).to(dtype)
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    return x, torch.outer(k, k) / 64, torch.randn(3, generator=g).to(dtype)


def pure(x, k, b):
    """(upfirdn2d down by 2, fused_leaky_relu) on the pure-PyTorch path."""
    return (upfirdn2d_mod.upfirdn2d_pytorch(x, k, 1, 2, (1, 1, 1, 1)),
            fused_act_mod.fused_leaky_relu_native(x, b, 0.2, 2 ** 0.5))


def public(x, k, b):
    """The same two ops through the public entry points (which consult op._jit)."""
    return upfirdn2d(x, k, down=2, pad=(1, 1)), fused_leaky_relu(x, b)


def test_failed_build_warns_once_and_uses_the_pure_path(cuda_sim):
    built = use_build(cuda_sim, fail="nvcc fatal: unsupported gpu architecture 'compute_90'")
    x, k, b = inputs()
    with pytest.warns(CudaOpsWarning) as record:
        out = public(x, k, b)
    messages = [str(w.message) for w in record if issubclass(w.category, CudaOpsWarning)]
    assert len(messages) == 2  # one line per op that was asked for (NCSN++ uses upfirdn2d only)
    assert all("\n" not in m and "failed to build" in m and "compute_90" in m for m in messages)
    for a, e in zip(out, pure(x, k, b)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # decided once per process: no second build, no second warning
        public(x, k, b)
    assert sorted(built) == sorted([upfirdn2d_mod.EXTENSION, fused_act_mod.EXTENSION])
    st = _jit.status()["op.upfirdn2d"]
    assert st["attempted"] and not st["built"] and st["fallback"] and "compute_90" in st["error"]


def test_matching_kernel_is_used_after_the_self_check(cuda_sim):
    up, act = FakeUpfirdn2d(), FakeFusedAct()
    use_build(cuda_sim, up=up, act=act)
    x, k, b = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = public(x, k, b)
    for a, e in zip(out, pure(x, k, b)):
        torch.testing.assert_close(a, e)
    calls = up.calls
    upfirdn2d(x, k, down=2, pad=(1, 1))
    assert up.calls == calls + 1, "the accepted kernel is what runs"
    st = _jit.status()
    for label in ("op.upfirdn2d", "op.fused_leaky_relu"):
        checks = st[label]["checks"]
        assert st[label]["built"] and not st[label]["fallback"]
        assert {c["dtype"] for c in checks} == {"float32", "bfloat16"}
        assert all(c["ok"] and c["forward"] <= c["tol"] and c["backward"] <= c["tol"] for c in checks)


@pytest.mark.parametrize("defect", ["unflipped", "scaled", "nan", "crash"])
def test_mismatching_upfirdn2d_kernel_falls_back(cuda_sim, defect):
    up = FakeUpfirdn2d(defect)
    use_build(cuda_sim, up=up, act=FakeFusedAct())
    x, k, b = inputs()
    with pytest.warns(CudaOpsWarning, match="does not match the pure-PyTorch path") as record:
        out = upfirdn2d(x, k, down=2, pad=(1, 1))
    assert len(record) == 1 and "\n" not in str(record[0].message)
    torch.testing.assert_close(out, pure(x, k, b)[0], rtol=0, atol=0)
    calls = up.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        upfirdn2d(x, k, down=2, pad=(1, 1))
    assert up.calls == calls, "a rejected kernel never runs again"
    assert _jit.status()["op.upfirdn2d"]["fallback"]


def test_backward_only_mismatch_is_caught(cuda_sim):
    """The fused op's forward is right, its gradient kernel ignores the slope: the check still fails."""
    use_build(cuda_sim, up=FakeUpfirdn2d(), act=FakeFusedAct("grad_ignores_slope"))
    x, k, b = inputs()
    with pytest.warns(CudaOpsWarning, match="fused_leaky_relu.*does not match"):
        out = fused_leaky_relu(x, b)
    torch.testing.assert_close(out, pure(x, k, b)[1], rtol=0, atol=0)
    bad = [c for c in _jit.status()["op.fused_leaky_relu"]["checks"] if not c["ok"]]
    assert bad and all(c["forward"] <= c["tol"] < c["backward"] for c in bad)


def test_bfloat16_tolerance_is_not_the_float32_one(cuda_sim):
    """A kernel that rounds like bf16 passes the bf16 check and would fail the float32 tolerance."""
    use_build(cuda_sim, up=FakeUpfirdn2d(), act=FakeFusedAct())
    upfirdn2d_mod._load_cuda()
    checks = _jit.status()["op.upfirdn2d"]["checks"]
    bf16 = [c for c in checks if c["dtype"] == "bfloat16"]
    assert bf16 and all(c["ok"] for c in bf16)
    assert max(c["forward"] for c in bf16) > _jit.CHECK_TOLERANCES[torch.float32]


def test_self_check_runs_inside_inference_mode_and_autocast(cuda_sim):
    """First CUDA use may come from a sampler (inference mode) or a bf16 training step (autocast)."""
    use_build(cuda_sim, up=FakeUpfirdn2d(), act=FakeFusedAct())
    x, k, b = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            upfirdn2d(x, k, down=2, pad=(1, 1))
    assert all(c["ok"] for c in _jit.status()["op.upfirdn2d"]["checks"])


def test_env_off_never_builds(cuda_sim):
    built = use_build(cuda_sim, up=FakeUpfirdn2d(), act=FakeFusedAct())
    cuda_sim.setenv(_jit.ENV_VAR, "off")
    x, k, b = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = public(x, k, b)
    assert built == []
    for a, e in zip(out, pure(x, k, b)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


def test_env_on_with_failing_build_raises(cuda_sim):
    use_build(cuda_sim, fail="nvcc not found")
    cuda_sim.setenv(_jit.ENV_VAR, "on")
    x, k, _ = inputs()
    with pytest.raises(CudaOpsError, match=r"op\.upfirdn2d: SCORE_MRI_CUDA_OPS=on .*failed to build.*nvcc not found"):
        upfirdn2d(x, k, down=2, pad=(1, 1))


def test_env_on_forces_the_kernel_without_the_check(cuda_sim):
    up = FakeUpfirdn2d("scaled")
    use_build(cuda_sim, up=up, act=FakeFusedAct())
    cuda_sim.setenv(_jit.ENV_VAR, "ON")
    x, k, b = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upfirdn2d(x, k, down=2, pad=(1, 1))
    assert up.calls == 1 and _jit.status()["op.upfirdn2d"]["checks"] is None
    torch.testing.assert_close(out, pure(x, k, b)[0] * (1 + 1e-3))


def test_forced_overrides_the_environment(cuda_sim):
    built = use_build(cuda_sim, up=FakeUpfirdn2d(), act=FakeFusedAct())
    cuda_sim.setenv(_jit.ENV_VAR, "on")
    x, k, _ = inputs()
    with _jit.forced("off"):
        upfirdn2d(x, k, down=2, pad=(1, 1))
    assert built == [] and _jit.mode() == "on"
    with pytest.raises(ValueError):
        with _jit.forced("sometimes"):
            pass


def test_bad_env_value_is_a_clear_error(cuda_sim):
    cuda_sim.setenv(_jit.ENV_VAR, "yes")
    x, k, _ = inputs()
    with pytest.raises(CudaOpsError, match="SCORE_MRI_CUDA_OPS='yes': expected one of auto, on, off"):
        upfirdn2d(x, k, down=2, pad=(1, 1))


def test_cpu_tensors_never_consult_the_decision(monkeypatch):
    """Without the simulation a CPU tensor takes the pure path even with a bad variable and a broken build."""
    monkeypatch.setenv(_jit.ENV_VAR, "yes")
    monkeypatch.setattr(_jit, "build", lambda *a: pytest.fail("build called for a CPU tensor"))
    x, k, b = inputs()
    for a, e in zip(public(x, k, b), pure(x, k, b)):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
