"""Loading a python config file (ml_collections style) by path."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from score_mri.errors import UserError

__all__ = ["load_config"]


def load_config(path: str | Path) -> Any:
    """Import a python config file by path and return its ``get_config()`` (ml_collections style)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_score_mri_config_{abs(hash(str(path.resolve())))}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UserError(f"cannot load config {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not callable(getattr(module, "get_config", None)):
        raise UserError(f"config {path} has no get_config() function")
    return module.get_config()
