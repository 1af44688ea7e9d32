"""Atomic file writes: a writer fills a temporary beside the target, which then replaces it in one step.

Readers never see half a file, a failed write leaves the target as it was, and temporaries of killed
writers (``.<name>.<pid>.tmp`` of a process that no longer exists) are removed by the next write.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["pid_alive", "temp_path", "remove_dead_temps", "atomic_write"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(path: Path) -> Path:
    """This process's temporary for ``path``: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_dead_temps(path: Path) -> None:
    """Remove the temporaries of ``path`` left by writers that were killed."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` on this process's temporary, then replace ``path`` with it (no temporary is left)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temps(path)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
