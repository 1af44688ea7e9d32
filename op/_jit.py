"""The one place that decides, per process, whether ``op/`` runs its compiled CUDA kernels or pure PyTorch.

``SCORE_MRI_CUDA_OPS`` selects the path:

* ``auto`` (default): the first time a CUDA tensor reaches an op, its extension is JIT-built (ninja, via
  ``torch.utils.cpp_extension.load``) and checked against the pure-PyTorch path on small random tensors,
  forward and backward, in float32 and bfloat16. A failed build or a failed check gives ONE warning
  (:class:`CudaOpsWarning`) and the pure-PyTorch path for the rest of the process.
* ``on``: the compiled kernels, without the check; a failed build raises :class:`CudaOpsError`.
* ``off``: pure PyTorch; nothing is built.

Importing ``op`` never compiles anything and never imports ``torch.utils.cpp_extension``; CPU tensors never
trigger a build. Each op module registers itself with :func:`register` and asks :func:`load` for its
extension; the outcome (built or not, build seconds, check records) is cached per op and per process and
reported by :func:`status`.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
ENV_VAR = "SCORE_MRI_CUDA_OPS"
MODES = ("auto", "on", "off")

# dtypes the compiled kernels accept (others use the pure-PyTorch path).
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Self-check: max |compiled - reference| / max |reference|, reference = the pure-PyTorch op in float64 on
# the same (dtype-rounded) inputs. Both kernels accumulate in float32 and round once, so the errors are a
# few float32 ulps, or half a bfloat16 ulp (2^-9) per element; a wrong index or tap gives O(1).
CHECK_TOLERANCES = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
CHECK_DTYPES = tuple(CHECK_TOLERANCES)


class CudaOpsError(RuntimeError):
    """``SCORE_MRI_CUDA_OPS=on`` but a compiled kernel is unavailable (or the variable has a bad value)."""


class CudaOpsWarning(RuntimeWarning):
    """A compiled kernel failed to build or to match the pure-PyTorch path; the pure path is used."""


@dataclass
class _Spec:
    name: str                      # extension module name
    sources: tuple[str, ...]       # files in op/
    label: str                     # the public op, for messages
    parity: Callable[[Any, torch.device], list[dict]]  # (extension or None, device) -> check records


@dataclass
class _State:
    attempted: bool = False
    module: Any = None
    error: str | None = None       # one line: why the build failed
    build_s: float | None = None
    checks: list[dict] | None = None
    warned: bool = False
    log: list[str] = field(default_factory=list)


_REGISTRY: dict[str, _Spec] = {}
_STATE: dict[str, _State] = {}
_override: str | None = None


def register(name: str, sources: Sequence[str], label: str,
             parity: Callable[[Any, torch.device], list[dict]]) -> None:
    """Declare an extension: its sources in ``op/``, its public name and its parity check."""
    _REGISTRY[name] = _Spec(name, tuple(sources), label, parity)


def mode() -> str:
    """The path in force: :func:`forced` override, else ``$SCORE_MRI_CUDA_OPS`` (default ``auto``)."""
    if _override is not None:
        return _override
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise CudaOpsError(f"{ENV_VAR}={os.environ.get(ENV_VAR)!r}: expected one of {', '.join(MODES)}")
    return value


@contextlib.contextmanager
def forced(path: str) -> Iterator[None]:
    """Run a block with ``path`` ('auto', 'on' or 'off') in force, whatever the environment says."""
    global _override
    if path not in MODES:
        raise ValueError(f"path must be one of {MODES}, got {path!r}")
    saved, _override = _override, path
    try:
        yield
    finally:
        _override = saved


def on_cuda(x: torch.Tensor) -> bool:
    """True when ``x`` is a CUDA tensor of a dtype the compiled kernels take."""
    return x.is_cuda and x.dtype in CUDA_DTYPES


def build(name: str, sources: Sequence[str]) -> Any:
    """JIT-compile and import extension ``name`` from ``op/<sources>`` (cached by torch across processes)."""
    from torch.utils.cpp_extension import load as cpp_load  # deferred: never imported on CPU-only use

    return cpp_load(name, sources=[os.path.join(MODULE_DIR, s) for s in sources], verbose=False)


def _one_line(exc: BaseException) -> str:
    """'Type: first line of the message'."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _warn_once(state: _State, message: str) -> None:
    """Issue ``message`` as a single-line CudaOpsWarning the first time only."""
    state.log.append(message)
    if not state.warned:
        state.warned = True
        warnings.warn(message, CudaOpsWarning, stacklevel=4)


def run_parity(name: str, module: Any, device: torch.device) -> list[dict]:
    """The registered parity check of ``name`` (compiled ``module`` or None) with autograd on, no autocast."""
    spec = _REGISTRY[name]
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        return spec.parity(module, device)


def check_device() -> torch.device:
    """Where the parity check runs: the current CUDA device."""
    return torch.device("cuda", torch.cuda.current_device())


def load(name: str) -> Any:
    """The compiled extension ``name`` if the path in force uses it, else None (see the module docstring)."""
    path = mode()
    if path == "off" or not torch.cuda.is_available():
        return None
    spec = _REGISTRY[name]
    state = _STATE.setdefault(name, _State())
    if not state.attempted:
        state.attempted = True
        t0 = time.perf_counter()
        try:
            state.module = build(spec.name, spec.sources)
        except Exception as exc:  # noqa: BLE001 - any build failure means the pure path
            state.error = _one_line(exc)
        state.build_s = time.perf_counter() - t0
    if state.module is None:
        if path == "on":
            raise CudaOpsError(f"{spec.label}: {ENV_VAR}=on but the CUDA extension failed to build "
                               f"({state.error})")
        _warn_once(state, f"{spec.label}: CUDA extension failed to build ({state.error}); "
                          f"using the pure-PyTorch path ({ENV_VAR}=off silences this)")
        return None
    if path == "on":
        return state.module
    if state.checks is None:
        try:
            state.checks = run_parity(name, state.module, check_device())
        except Exception as exc:  # noqa: BLE001 - a kernel that crashes fails its check
            state.checks = [{"op": spec.label, "case": "self-check", "ok": False, "error": _one_line(exc)}]
    bad = [r for r in state.checks if not r["ok"]]
    if bad:
        first = bad[0]
        what = first.get("error") or (f"{first['case']}, {first['dtype']}: forward error {first['forward']:.2g}, "
                                      f"backward error {first['backward']:.2g}, tolerance {first['tol']:.0e}")
        _warn_once(state, f"{spec.label}: compiled CUDA kernel does not match the pure-PyTorch path "
                          f"({len(bad)} of {len(state.checks)} checks failed; {what}); using the pure-PyTorch "
                          f"path ({ENV_VAR}=on forces the kernel)")
        return None
    return state.module


def status() -> dict[str, dict]:
    """Per registered op: path in force, whether built, build seconds, error, check records."""
    out = {}
    for name, spec in _REGISTRY.items():
        st = _STATE.get(name, _State())
        out[spec.label] = {"extension": name, "attempted": st.attempted, "built": st.module is not None,
                           "build_s": st.build_s, "error": st.error, "checks": st.checks,
                           "fallback": st.attempted and (st.module is None or
                                                         any(not r["ok"] for r in st.checks or []))}
    return out


def reset() -> None:
    """Forget every cached decision (tests; a new build attempt follows on the next CUDA use)."""
    _STATE.clear()


# --------------------------------------------------------------------------------------------------------
# Parity measurement shared by the ops' checks (and benchmarks/gpu_report.py)
# --------------------------------------------------------------------------------------------------------

def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| / max |ref| in float64 (inf when a is not finite)."""
    a64, r64 = a.detach().double(), ref.detach().double()
    if not torch.isfinite(a64).all():
        return float("inf")
    return float((a64 - r64).abs().max() / r64.abs().max().clamp_min(1e-30)) if r64.numel() else 0.0


def compare(compiled: Callable[..., torch.Tensor] | None, native: Callable[..., torch.Tensor],
            inputs: Sequence[torch.Tensor], grad: Sequence[bool], dtype: torch.dtype,
            device: torch.device, generator: torch.Generator) -> dict:
    """Forward and backward errors of ``compiled`` and ``native`` in ``dtype`` against ``native`` in float64.

    ``inputs`` (any float dtype, CPU) are rounded to ``dtype`` first, so all three runs see the same values;
    the cotangent is drawn from ``generator``. Backward error: the largest over the inputs with ``grad``.
    ``compiled=None`` records only the pure path (forward/backward and ok are then None).
    """
    rounded = [t.to(dtype) for t in inputs]

    def run(fn, run_dtype, gy=None):
        xs = [t.to(device=device, dtype=run_dtype, copy=True).requires_grad_(g) for t, g in zip(rounded, grad)]
        y = fn(*xs)
        if gy is None:
            return y, xs
        gs = torch.autograd.grad(y, [x for x, g in zip(xs, grad) if g], gy.to(device=device, dtype=run_dtype))
        return y, gs

    y_ref, _ = run(native, torch.float64)
    gy = torch.randn(y_ref.shape, generator=generator, dtype=torch.float64).to(dtype)
    y_ref, g_ref = run(native, torch.float64, gy)
    rec: dict = {"dtype": str(dtype).replace("torch.", ""), "tol": CHECK_TOLERANCES.get(dtype)}
    y_nat, g_nat = run(native, dtype, gy)
    rec["pytorch_forward"] = _rel_err(y_nat, y_ref)
    rec["pytorch_backward"] = max(_rel_err(a, b) for a, b in zip(g_nat, g_ref))
    if compiled is None:
        rec.update(forward=None, backward=None, ok=None)
        return rec
    y_c, g_c = run(compiled, dtype, gy)
    rec["forward"] = _rel_err(y_c, y_ref) if y_c.shape == y_ref.shape else float("inf")
    rec["backward"] = max(_rel_err(a, b) if a.shape == b.shape else float("inf") for a, b in zip(g_c, g_ref))
    tol = rec["tol"] if rec["tol"] is not None else 0.0
    rec["ok"] = bool(rec["forward"] <= tol and rec["backward"] <= tol)
    return rec
