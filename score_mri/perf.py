"""Runtime speed settings for inference (measured in ``benchmarks/forward_speed.py``).

* :func:`configure_cpu_allocator`: glibc returns every allocation above the mmap threshold (>= 32 MiB
  once the dynamic threshold has grown) to the OS when it is freed, so each NCSN++ forward at 320x320
  page-faults and zeroes its large feature maps again (8-10 s of system time in a 17 s forward of the
  knee model). Keeping freed memory in the heap (no mmap, large trim threshold) removes that cost.
* :func:`prepare_model_for_inference`: eval mode, no parameter gradients, channels_last (NHWC) weights on
  the CPU (keeps the outputs up to float rounding).
* :func:`inference`: ``torch.inference_mode`` (no autograd bookkeeping, no version counters).
* Inference precision (``--precision``, default ``fp32``: bf16 cost 1.5-1.9 dB PSNR on sample 001, see
  ``benchmarks/results/speed_round2.md``): 'auto' (:func:`resolve_precision`) picks ``bf16`` on CPUs with
  native bf16 arithmetic (AVX512-BF16 or AMX) and on CUDA devices that support it, else ``fp32``;
  :func:`set_inference_precision` marks a model, and :func:`model_autocast` (``models.precision``) is the context its score
  function runs the network in (bf16 autocast of the network call only: the sampler's arithmetic, data
  consistency and the network's output stay float32).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import ctypes.util
import platform
import sys

import torch

from models.precision import PRECISION_ATTR, model_autocast, model_precision  # noqa: F401  (re-exported)

__all__ = ["configure_cpu_allocator", "prepare_model_for_inference", "inference", "allocator_state",
           "PRECISIONS", "cpu_has_bf16", "default_precision", "resolve_precision", "set_inference_precision",
           "model_precision", "model_autocast"]

# glibc mallopt parameter numbers (<malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_INT_MAX = 2 ** 31 - 1                 # mallopt takes a C int
_DEFAULT_TRIM_THRESHOLD = _INT_MAX     # 2 GiB: keep up to 2 GiB of free memory at the top of the heap
_DEFAULT_TOP_PAD = 1 << 26             # grow the heap 64 MiB at a time (fewer brk calls)

_state: dict = {"configured": False, "settings": None}


def _glibc():
    """The process's glibc as a ctypes library, or None on other C libraries / platforms."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def configure_cpu_allocator(trim_threshold: int = _DEFAULT_TRIM_THRESHOLD,
                            top_pad: int = _DEFAULT_TOP_PAD) -> bool:
    """Keep freed tensor memory in the glibc heap (M_MMAP_MAX=0, large M_TRIM_THRESHOLD, M_TOP_PAD).

    Same effect as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` in the environment, but usable
    from inside Python (values are clamped to a C int). Call it once before the first large allocation;
    repeated calls are harmless.
    Returns True when the settings are in effect, False off glibc (a no-op there).
    The cost: the process keeps its peak heap size until it exits.
    """
    settings = (int(min(max(trim_threshold, 0), _INT_MAX)), int(min(max(top_pad, 0), _INT_MAX)))
    if _state["configured"] and _state["settings"] == settings:
        return True
    libc = _glibc()
    if libc is None:
        return False
    trim, pad = settings
    ok = bool(libc.mallopt(_M_MMAP_MAX, 0))
    ok &= bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
    ok &= bool(libc.mallopt(_M_TOP_PAD, pad))
    _state["configured"], _state["settings"] = ok, settings if ok else None
    return ok


def allocator_state() -> dict:
    """What :func:`configure_cpu_allocator` has set in this process (for benchmark records)."""
    trim_pad = _state["settings"] or (None, None)
    return {"configured": _state["configured"], "mmap_max": 0 if _state["configured"] else None,
            "trim_threshold": trim_pad[0], "top_pad": trim_pad[1]}


def prepare_model_for_inference(model: torch.nn.Module, device: torch.device | str | None = None, *,
                                channels_last: bool | None = None, precision: str | None = "fp32") -> torch.nn.Module:
    """Eval mode, frozen parameters, on ``device``; ``channels_last`` converts the 4-D weights to NHWC;
    ``precision`` ('auto', 'bf16', 'fp32'; None leaves the model unmarked) is its inference precision
    (:func:`set_inference_precision`).

    ``channels_last=None`` (default): on for a CPU model (oneDNN convolutions run ~10% faster in NHWC and
    skip the NCHW <-> blocked reorders), off on GPUs (not measured there). The model's outputs stay the
    same up to float rounding; its one-channel inputs need no conversion. Returns the (same, modified in
    place) model.
    """
    if device is not None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    if channels_last is None:
        p = next(model.parameters(), None)
        channels_last = p is not None and p.device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if precision is not None:
        set_inference_precision(model, precision)
    return model


def inference() -> contextlib.AbstractContextManager:
    """Context for sampling: ``torch.inference_mode()`` (faster than ``no_grad``; tensors made inside
    cannot later be used in autograd)."""
    return torch.inference_mode()


# ----------------------------------------------------------------------------------------------------------
# Inference precision
# ----------------------------------------------------------------------------------------------------------

PRECISIONS = ("auto", "bf16", "fp32")
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (the avx512_bf16 or amx_bf16 flag of /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False


def default_precision(device: torch.device | str = "cpu") -> str:
    """'bf16' on a CPU with native bf16 or a CUDA device that supports it, else 'fp32'."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        except (RuntimeError, AssertionError):
            return "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


def resolve_precision(precision: str | None, device: torch.device | str = "cpu") -> str:
    """'auto' or None -> :func:`default_precision`; 'bf16' and 'fp32' pass through (anything else: ValueError)."""
    if precision is None or precision == "auto":
        return default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def set_inference_precision(model: torch.nn.Module, precision: str | None,
                            device: torch.device | str | None = None) -> str:
    """Mark ``model`` to run its inference calls in ``precision`` (resolved for ``device``, default: the
    model's); returns the resolved value. A model without the mark runs in its own dtype."""
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    resolved = resolve_precision(precision, device)
    setattr(model, PRECISION_ATTR, resolved)
    return resolved
