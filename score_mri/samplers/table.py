"""The one sampler table: every sampler by name, each with the signature
``sampler(model, op, y, settings, *, generator=None, callback=None) -> Result``.

A new sampler is a function with that signature and a line here.
"""
from __future__ import annotations

from typing import Callable

from models.registry import lookup
from score_mri.samplers import algorithms, sense
from score_mri.samplers.pc_loop import Result

__all__ = ["SAMPLERS", "get_sampler"]

SAMPLERS: dict[str, Callable[..., Result]] = {
    "real": algorithms.sample_real,   # Algorithm 2
    "complex": sense.sample_complex,  # Algorithm 3 (+ phase modes)
    "ssos": sense.sample_ssos,        # Algorithm 4 (+ phase modes)
    "hybrid": sense.sample_hybrid,    # Algorithm 5 (+ phase modes)
    "sense": sense.sample_sense,      # SENSE model, CG data consistency (beyond the paper)
}


def get_sampler(name: str) -> Callable[..., Result]:
    """The sampler registered under ``name`` (keys of :data:`SAMPLERS`)."""
    return lookup(SAMPLERS, "sampler", name)
