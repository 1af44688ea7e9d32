"""Shared test fixtures: locating ``../shared`` (or $SCORE_MRI_SHARED) and loading reference vectors."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# One intra-op thread for the tests and the scripts they start: the tiny models are far slower with two
# threads on a loaded 2-core machine (thread oversubscription), and results do not depend on it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def shared_dir() -> Path | None:
    """Return the shared folder (``$SCORE_MRI_SHARED`` or ``<repo>/../shared``) or None."""
    env = os.environ.get("SCORE_MRI_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared")
    for c in candidates:
        if (c / "reference").is_dir():
            return c
    return None


def _missing(what: str):
    """Skip (or fail under CI=true) when a shared file is absent."""
    msg = f"{what} not found (looked at $SCORE_MRI_SHARED and {REPO.parent / 'shared'})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " -- required when CI=true")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared folder; skips (fails on CI) when it is absent."""
    d = shared_dir()
    if d is None:
        _missing("../shared")
    return d


@pytest.fixture(scope="session")
def reference(shared):
    """Loader for ``shared/reference/<name>`` (our own files, so weights_only=False)."""
    cache = {}

    def load(name: str):
        if name not in cache:
            path = shared / "reference" / name
            if not path.exists():
                _missing(str(path))
            if path.suffix == ".json":
                import json
                cache[name] = json.loads(path.read_text())
            else:
                cache[name] = torch.load(path, weights_only=False, map_location="cpu")
        return cache[name]

    return load


def assert_golden(actual: torch.Tensor, expected: torch.Tensor, ulps: int = 32) -> None:
    """Match a golden tensor to a few units in the last place of its scale (dtype and shape exactly).

    Golden vectors were recorded on another CPU; FFT and reduction kernels pick different SIMD paths per
    CPU, so results agree to rounding, not bit for bit. ``ulps`` machine epsilons of max|expected| bound
    the difference (a real defect moves values by many orders of magnitude more).
    """
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, actual.shape)
    eps = torch.finfo(expected.real.dtype if expected.is_complex() else expected.dtype).eps \
        if (expected.is_floating_point() or expected.is_complex()) else 0.0
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=ulps * eps * max(scale, 1e-30))


# ---------------------------------------------------------------------------------------------- tiny models

TINY_CONFIG = '''
"""Tiny NCSN++ (32 x 32) on top of the knee config, for CLI tests."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_knee_cfg_tiny", Path({repo!r}) / "configs" / "ve" / "fastmri_knee_320_ncsnpp_continuous.py")
_knee = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_knee)


def get_config():
    config = _knee.get_config()
    config.data.image_size = 32
    config.model.nf = {nf}
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.model.attn_resolutions = (16,)
    config.model.num_scales = 2
    for key, value in {sampling!r}.items():
        config.sampling[key] = value
    return config
'''


def write_tiny_model(directory: Path, name: str = "tiny", nf: int = 8, sampling: dict | None = None
                     ) -> tuple[Path, Path]:
    """Write a tiny config file and a random-weight checkpoint (seed 0) for it; return their paths."""
    from score_mri.cli.flags import load_config
    from models import utils as mutils
    from models.checkpoint import save_checkpoint
    from models.ema import ExponentialMovingAverage

    cfg_path, ckpt_path = directory / f"{name}.py", directory / f"{name}.pth"
    cfg_path.write_text(TINY_CONFIG.format(repo=str(REPO), nf=nf, sampling=dict(sampling or {})))
    config = load_config(cfg_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mutils.create_model(config)
    ema = ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate)
    save_checkpoint(ckpt_path, {"model": model, "ema": ema, "step": 0})
    return cfg_path, ckpt_path


def np_fft2c(x: np.ndarray) -> np.ndarray:
    """Reference centered orthonormal 2-D FFT over the last two axes, in NumPy (fastMRI's fft2c)."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


def np_ifft2c(k: np.ndarray) -> np.ndarray:
    """Inverse of :func:`np_fft2c`."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)
