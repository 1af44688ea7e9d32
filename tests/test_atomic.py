"""Atomic writes (``io.atomic``) and the three writers that use it: text, fastMRI volume and NIfTI files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from score_mri.io import nifti, outputs
from score_mri.io.atomic import atomic_write

DEAD_PID = 2 ** 22 + 12345  # above any Linux pid_max: no such process
LIVE_PID = 1                # init: always running

WRITERS: dict[str, Callable[[Path], object]] = {
    "summary.json": lambda p: outputs.write_atomic(p, '{"new": 1}\n'),
    "v.h5": lambda p: outputs.write_volume(p, np.ones((2, 4, 4)), {"slices": np.arange(2)}),
    "v.nii.gz": lambda p: nifti.write_nifti(p, np.ones((2, 4, 4))),
}


def temporaries(folder: Path) -> list[str]:
    """Names of the temporary files in ``folder``."""
    return sorted(p.name for p in folder.glob(".*.tmp"))


def failing_writer(tmp: Path) -> None:
    """Write half a file, then fail."""
    tmp.write_bytes(b"half")
    raise RuntimeError("writer failed")


def test_a_failing_writer_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "new" / "x.bin"
    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, failing_writer)
    assert not target.exists() and temporaries(target.parent) == []


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, failing_writer)
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_a_successful_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    assert atomic_write(target, lambda tmp: tmp.write_bytes(b"new")) == target
    assert target.read_bytes() == b"new" and temporaries(tmp_path) == []


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "x.bin"
    dead, live = tmp_path / f".x.bin.{DEAD_PID}.tmp", tmp_path / f".x.bin.{LIVE_PID}.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"in progress")
    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert not dead.exists() and live.read_bytes() == b"in progress"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_every_writer_replaces_the_file_and_removes_dead_temporaries(tmp_path, name):
    target = tmp_path / name
    target.write_bytes(b"old")
    dead = tmp_path / f".{name}.{DEAD_PID}.tmp"
    dead.write_bytes(b"half")
    WRITERS[name](target)
    assert target.read_bytes() not in (b"old", b"half") and temporaries(tmp_path) == []


def test_a_failing_volume_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "v.h5"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):  # h5py cannot store an arbitrary object as an attribute
        outputs.write_volume(target, np.ones((1, 4, 4)), {"bad": object()})
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []
