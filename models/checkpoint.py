"""Saving and loading training checkpoints in the score-MRI layout (README "Using the original checkpoint").

A checkpoint is ``torch.save`` of ``{'model': state_dict, 'ema': {'decay', 'num_updates',
'shadow_params'}, 'optimizer': Adam state_dict, 'step': int}``.

Fixes over the original ``restore_checkpoint``: files are read with ``weights_only=True`` (no pickled
code runs; the numpy float that the original's optimizer may hold as ``lr`` is accepted through a
narrow allow-list of numeric numpy scalars); the ``module.`` prefix of DataParallel checkpoints (the
released ``checkpoint_95.pth``) is stripped and the model is loaded strictly, so the frozen Fourier
frequencies come from the file instead of a fresh random draw; a ``sigmas`` buffer of another length
is rebuilt from the config; mismatches raise ``CheckpointError`` naming the offending keys, a file that
is no checkpoint at all (empty, truncated, text, HTML, LFS pointer) says so, and a pickled global that the
safe loader refuses is named.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

_PREFIX = "module."
_MAX_LISTED = 4


class CheckpointError(ValueError):
    """The file is not a readable checkpoint or does not match the model/config."""


# --------------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------------

def _numpy_scalar_fn():
    """numpy's scalar reconstructor (``numpy._core`` in numpy 2, ``numpy.core`` before)."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def _checked_numpy_scalar(dtype, *args):
    """Rebuild a pickled numpy scalar, refusing anything but plain numeric dtypes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biufc":
        raise pickle.UnpicklingError(f"refusing numpy scalar of dtype {dtype!r}")
    return _numpy_scalar_fn()(dtype, *args)


def _safe_globals() -> list:
    """Allow-list for ``torch.load(weights_only=True)``: numeric numpy scalars and their dtypes."""
    allowed: list = [(_checked_numpy_scalar, "numpy._core.multiarray.scalar"),
                     (_checked_numpy_scalar, "numpy.core.multiarray.scalar"),
                     np.dtype]
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                     "Int16DType", "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType",
                     "UInt8DType", "BoolDType", "Complex64DType", "Complex128DType"):
            if hasattr(dtypes_mod, name):
                allowed.append(getattr(dtypes_mod, name))
    return allowed


def _to_python_number(v: Any) -> Any:
    """numpy scalars -> Python numbers (e.g. the original optimizer's numpy ``lr``)."""
    return v.item() if isinstance(v, np.generic) else v


def _torch_load(path: Path, device) -> Any:
    """``torch.load`` with weights_only=True; every failure becomes a one-line CheckpointError."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    try:
        with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
            # a plain pickle triggers a protocol warning before the error that reports it: keep one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused is not None:
            raise CheckpointError(f"{path} is not a loadable checkpoint: it needs {refused}, which the safe "
                                  "loader (torch.load weights_only=True) refuses, so no pickled code runs") from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({_unreadable_reason(path, exc)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({_unreadable_reason(path, exc)})") from None


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """'Type: first line of the message', shortened."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")  # pickled long: torch's legacy magic
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_GOT_TYPE = re.compile(r"(?:Can only|Only) .*?but got (<class '[^']+'>|\S+)")


def _refused_global(exc: BaseException) -> str | None:
    """What torch's weights-only unpickler refused: 'the global posix.system (os.system)', or None."""
    text = str(exc)
    m = _GLOBAL.search(text)
    if m:
        name = m.group(1).rstrip(".")
        module, _, attr = name.rpartition(".")
        alias = f" (os.{attr})" if module in ("posix", "nt") else ""  # os functions pickle as posix.* / nt.*
        return f"the global {name}{alias}"
    m = _GOT_TYPE.search(text)
    if m:
        return f"an object of type {m.group(1).strip(chr(39) + '<>').replace('class ', '')}"
    return None


def _unreadable_reason(path: Path, exc: BaseException) -> str:
    """Why a file is not a PyTorch checkpoint, from its first bytes (empty, text, HTML, truncated, ...)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot read it: {e.strerror or e}"
    if not head:
        return "the file is empty"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights: run git lfs pull"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        if text.lstrip().lower().startswith(("<!doctype html", "<html")):
            return "an HTML page, not a PyTorch file: a failed download?"
        return "a text file, not a PyTorch file"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        if not zipfile.is_zipfile(path):
            return "truncated or damaged: its zip directory is missing"
        return f"damaged PyTorch archive: {_first_line(exc)}"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array, not a PyTorch file"
    if head[:1] == b"\x80":  # a pickle: the legacy torch.save format starts with its magic number
        if isinstance(exc, EOFError) or "EOF" in str(exc):
            return "truncated: the data ends early"
        if head[2:14] != _LEGACY_MAGIC:
            return "a plain pickle, not a torch.save file"
        return f"damaged legacy PyTorch file: {_first_line(exc)}"
    return "neither a zip archive nor a pickle"


# --------------------------------------------------------------------------------------------------
# Matching a state dict to a model
# --------------------------------------------------------------------------------------------------

def _listing(keys: list[str]) -> str:
    """'a, b, c (+N more)'."""
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the DataParallel ``module.`` prefix (all keys, when every key has it)."""
    keys = list(state.keys())
    if keys and all(isinstance(k, str) and k.startswith(_PREFIX) for k in keys):
        return {k[len(_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def _is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of str -> tensor."""
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()))


def _model_state(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint (layout of section 2, or a bare state dict)."""
    if isinstance(ckpt, Mapping) and "model" in ckpt:
        state = ckpt["model"]
    elif _is_state_dict(ckpt):
        state = ckpt
    else:
        what = f"a dict with keys {_listing(sorted(map(str, ckpt.keys())))}" \
            if isinstance(ckpt, Mapping) else f"a {type(ckpt).__name__}"
        raise CheckpointError(f"{path} is not a score-MRI checkpoint (no 'model' entry; found {what})")
    if not _is_state_dict(state):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    return _strip_prefix(state)


def _check_and_fix(state: dict[str, torch.Tensor], model: torch.nn.Module,
                   path: Path) -> dict[str, torch.Tensor]:
    """Strict key/shape check against the model; a ``sigmas`` of another length is rebuilt."""
    own = model.state_dict()
    if "sigmas" in own and (("sigmas" not in state) or state["sigmas"].shape != own["sigmas"].shape):
        # Noise-level table of the config (num_scales may differ from training); not a weight.
        state["sigmas"] = own["sigmas"].detach().clone()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches: {_listing(wrong_shape)}")
        raise CheckpointError(f"{path} does not match the model built from the config ("
                              + "; ".join(parts) + ")")
    return state


def _ema_shadows(ckpt: Mapping, model: torch.nn.Module, path: Path) -> list[torch.Tensor]:
    """Validated EMA shadow tensors, one per trainable parameter in parameters() order."""
    ema_state = ckpt.get("ema")
    if not isinstance(ema_state, Mapping) or "shadow_params" not in ema_state:
        raise CheckpointError(f"{path} has no EMA state ('ema' with 'shadow_params')")
    shadows = list(ema_state["shadow_params"])
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if len(shadows) != len(params):
        raise CheckpointError(f"{path}: EMA has {len(shadows)} shadow parameters, the model has "
                              f"{len(params)} trainable parameters")
    bad = [f"{n} {tuple(s.shape)} vs model {tuple(p.shape)}" for s, (n, p) in zip(shadows, params)
           if not torch.is_tensor(s) or s.shape != p.shape]
    if bad:
        raise CheckpointError(f"{path}: EMA shadow shapes do not match the model: {_listing(bad)}")
    return shadows


def _copy_shadows(shadows: list[torch.Tensor], model: torch.nn.Module) -> None:
    """Write EMA shadows into the trainable parameters (parameters() order)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for s, p in zip(shadows, params):
            p.copy_(s)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def _as_state(obj: Any) -> Any:
    """Objects with ``state_dict()`` (model, optimizer, EMA) become their state dict."""
    return obj.state_dict() if hasattr(obj, "state_dict") and callable(obj.state_dict) else obj


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Atomically write ``{'model', 'ema', 'optimizer', 'step'}`` (objects -> state dicts).

    The file is written to a hidden temporary file in the same folder and renamed over ``path``,
    so an interrupted save never leaves a partial file under the target name; temporary files left by
    a killed earlier save (kill -9 mid-write) are removed after the next successful one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: _as_state(v) for k, v in state.items()}
    if "step" in payload:
        payload["step"] = int(payload["step"])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _load_model_state(path: Path, model: torch.nn.Module, device) -> dict:
    """Read ``path``, load its model state strictly into ``model``; the file's dict with 'model' cleaned, 'step' int."""
    ckpt = _torch_load(path, device)
    state = _check_and_fix(_model_state(ckpt, path), model, path)
    model.load_state_dict(state, strict=True)
    out = dict(ckpt) if isinstance(ckpt, Mapping) and "model" in ckpt else {"model": ckpt}
    out["model"] = state
    out["step"] = int(_to_python_number(out.get("step", 0)))
    return out


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module, ema=None, optimizer=None,
                    device: str | torch.device = "cpu", *, copy_ema_to_model: bool = True) -> dict:
    """Restore model (strict), EMA and optimizer from ``path``; return the loaded dict.

    With ``ema`` given, its state is loaded and, unless ``copy_ema_to_model=False`` (use that to
    resume training), the EMA weights are also copied into the model. The returned dict has the
    cleaned 'model' state and 'step' (0 when absent).
    """
    path = Path(path)
    out = _load_model_state(path, model, device)

    if ema is not None:
        shadows = _ema_shadows(out, model, path)
        ema_state = dict(out["ema"])
        ema_state["shadow_params"] = shadows
        ema_state["decay"] = float(_to_python_number(ema_state.get("decay", ema.decay)))
        num_updates = _to_python_number(ema_state.get("num_updates", ema.num_updates))
        ema_state["num_updates"] = None if num_updates is None else int(num_updates)
        try:
            ema.load_state_dict(ema_state)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        if copy_ema_to_model:
            ema.copy_to(model.parameters())

    if optimizer is not None and out.get("optimizer") is not None:
        opt_state = out["optimizer"]
        try:
            for group in opt_state.get("param_groups", []):
                for k, v in list(group.items()):
                    group[k] = _to_python_number(v)
            optimizer.load_state_dict(opt_state)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: optimizer state does not match ({msg})") from None
    return out


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module,
                       device: str | torch.device = "cpu") -> dict:
    """Load a checkpoint for inference: model strictly, then the EMA weights into the model.

    A file without EMA state (e.g. a bare state dict) gives the model weights as stored.
    """
    path = Path(path)
    out = _load_model_state(path, model, device)
    if out.get("ema") is not None:
        _copy_shadows(_ema_shadows(out, model, path), model)
    return out
