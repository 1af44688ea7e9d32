"""Name registries: the one class-decorator factory behind ``register_model``, ``register_predictor``, ..."""
from __future__ import annotations

from typing import Callable


def registrar(registry: dict[str, type], kind: str) -> Callable:
    """A decorator ``register(cls=None, *, name=None)`` adding classes to ``registry`` (score_sde_pytorch API)."""

    def register(cls=None, *, name: str | None = None):
        """Register ``cls`` under ``name`` (default: the class name); usable with or without arguments."""

        def add(cls):
            key = cls.__name__ if name is None else name
            if key in registry:
                raise ValueError(f"Already registered {kind} with name: {key}")
            registry[key] = cls
            return cls

        return add if cls is None else add(cls)

    return register


def lookup(registry: dict[str, type], kind: str, name: str) -> type:
    """The class registered under ``name`` (case-insensitive), or a ValueError listing the known names."""
    for key in (name, name.lower()):
        if key in registry:
            return registry[key]
    raise ValueError(f"unknown {kind} {name!r}; expected one of {', '.join(sorted(registry))}")
