"""Where the repository's data lives: configs, the embedded prior's weights and the shipped samples.

From a source checkout (or an editable install) these are the folders beside the package. A plain
``pip install .`` ships them inside the package as ``score_mri/_data/{weights,samples}`` (see
``pyproject.toml``); the first location that exists wins.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["REPO", "DATA", "DEFAULT_CONFIG", "DEFAULT_CKPT", "SAMPLES"]

_PACKAGE = Path(__file__).resolve().parent
REPO = _PACKAGE.parent                         # the source checkout (or site-packages when installed)
DATA = REPO if (REPO / "weights" / "colin27_ncsnpp_small.pth").is_file() else _PACKAGE / "_data"


def _configs_dir() -> Path:
    """The folder of the ``configs`` package (a source folder or its installed copy)."""
    import configs
    return Path(configs.__file__).resolve().parent


DEFAULT_CONFIG = _configs_dir() / "ve" / "colin27_ncsnpp_small.py"
DEFAULT_CKPT = DATA / "weights" / "colin27_ncsnpp_small.pth"
SAMPLES = DATA / "samples"
