"""Progress of a reconstruction: a tqdm bar on a terminal, plain lines in a log file, nothing with ``--quiet``.

Off a terminal (a log file, ``nohup``, a batch job) tqdm prints nothing, so a long run would be silent for
minutes; there a line is written when a slice starts and about every 10 % of its steps.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "log"]


def log(message: str, *, quiet: bool = False, stream: TextIO | None = None) -> None:
    """One progress line on stderr (flushed at once), unless ``quiet``."""
    if not quiet:
        stream = stream or sys.stderr
        stream.write(message + "\n")
        stream.flush()


class Progress:
    """``total`` steps of the slice ``name``: tqdm on a terminal, else a line every ~10 % of the steps."""

    def __init__(self, total: int, name: str, *, quiet: bool = False, stream: TextIO | None = None):
        self.total, self.name, self.quiet = max(int(total), 1), name, quiet
        self.stream = stream or sys.stderr
        self.count, self.next_line, self.tic = 0, 0, time.time()
        self.bar = None
        if quiet:
            return
        if self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, desc=name, unit="step", file=self.stream)
        else:
            log(f"{name}: {self.total} steps", stream=self.stream)
            self.next_line = max(1, round(self.total / 10))

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps."""
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        elif not self.quiet and self.count >= self.next_line and self.count < self.total:
            log(f"{self.name}: step {self.count}/{self.total} ({100 * self.count // self.total}%, "
                f"{time.time() - self.tic:.0f} s)", stream=self.stream)
            self.next_line += max(1, round(self.total / 10))

    def close(self) -> None:
        """End the bar (the slice's result line follows on stdout)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
