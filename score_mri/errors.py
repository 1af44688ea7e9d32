"""The one error type for bad user input, shared by every layer."""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad user input (a flag, a file, a config, a work directory): one line on stderr, exit status 2."""
