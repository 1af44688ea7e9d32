"""Wiring of the default (fixed-mode) paths: each step changes the result the way it should.

The maths of every step has its own tests; these check that the steps are connected. Algorithm 5's SENSE
step is compared, iteration by iteration, with a NumPy computation of x_c + lambda S_c A^H (y - A S^H x)
and the lambda it used is read back from the result; the command line is run in-process with a tiny
random model whose forward is observed (and, for the step-size checks, replaced) through a hook on the
model that ``models.utils.create_model`` returns, so the checks see what the sampler actually ran.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_model
import torch

import sampling
import sde_lib
import utils
from conftest import np_fft2c, np_ifft2c

REPO = Path(__file__).resolve().parents[1]
# these tests run 1-8 steps on purpose; the few-step divergence warning is not what they are about
pytestmark = pytest.mark.filterwarnings("ignore:.* steps can diverge:UserWarning")


# ---------------------------------------------------------------------------------------------- NumPy model

fft2c, ifft2c = np_fft2c, np_ifft2c  # the NumPy reference pair (conftest)


class NumpySense:
    """Algorithm 5's operators written out in NumPy: A u = M F(S u), A^H k = sum_c conj(S_c) F^-1(M k_c)."""

    def __init__(self, sens: np.ndarray, mask: np.ndarray, y: np.ndarray):
        self.S, self.M, self.y = sens, mask, y              # [C, H, W], [H, W], [C, H, W]

    def A(self, u: np.ndarray) -> np.ndarray:
        return self.M * fft2c(self.S * u)

    def A_H(self, k: np.ndarray) -> np.ndarray:
        return np.sum(np.conj(self.S) * ifft2c(self.M * k), axis=0)

    def combine(self, x: np.ndarray) -> np.ndarray:
        """S^H x: coil images [C, H, W] -> image [H, W]."""
        return np.sum(np.conj(self.S) * x, axis=0)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Per-coil data consistency F^-1(F(x)(1 - M) + y) (Algorithm 4's step)."""
        return ifft2c(fft2c(x) * (1 - self.M) + self.y)

    def sense_direction(self, x: np.ndarray) -> np.ndarray:
        """The SENSE step per unit lambda: S A^H (y - A S^H x), coil images [C, H, W]."""
        return self.S * self.A_H(self.y - self.A(self.combine(x)))[None]

    def residual(self, x: np.ndarray) -> float:
        """||y - A S^H x||."""
        return float(np.linalg.norm(self.y - self.A(self.combine(x))))


class ToyScore(torch.nn.Module):
    """Exact score of N(0, s^2) per pixel perturbed by N(0, sigma^2): -x / (s^2 + sigma^2)."""

    def __init__(self, s: float = 0.3):
        super().__init__()
        self.s = s
        self.unused = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return -x / (self.s ** 2 + sigma.reshape(-1, 1, 1, 1) ** 2)


def sense_problem(n_coils: int = 3, size: int = 16):
    """(sens [1, C, H, W] with sum_c |S_c|^2 = 1, column mask [1, 1, H, W], y [1, C, H, W]) as torch tensors."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    sens = np.stack([np.exp(-((xx - np.cos(a)) ** 2 + (yy - np.sin(a)) ** 2)) * np.exp(1j * (c + 1) * xx)
                     for c, a in enumerate(np.linspace(0, 2 * np.pi, n_coils, endpoint=False))])
    sens /= np.sqrt(np.sum(np.abs(sens) ** 2, axis=0, keepdims=True))
    image = (np.exp(-4 * (xx ** 2 + yy ** 2)) + 0.3 * xx) * np.exp(0.7j * yy)
    cols = np.zeros(size)
    cols[::3] = 1
    cols[size // 2 - 2:size // 2 + 2] = 1
    mask = np.broadcast_to(cols, (size, size))
    y = mask * fft2c(sens * image)
    as_torch = lambda a, dt: torch.from_numpy(np.ascontiguousarray(a)[None]).to(dt)  # noqa: E731
    return as_torch(sens, torch.complex64), as_torch(mask[None], torch.float32), as_torch(y, torch.complex64)


def identity(x):
    return x


# ---------------------------------------------------------------------------------------------- Algorithm 5

def test_alg5_sense_step_matches_hand_computation_with_stretched_lambda():
    """Iteration by iteration: per-coil DC, then every m_steps the SENSE step with lambda_i = 1 - 0.8 i / N."""
    sens, mask, y = sense_problem()
    N, m_steps = 8, 3
    seen = []
    fn = sampling.get_pc_fouriercs_RI_coil_SENSE(
        sde_lib.VESDE(0.01, 20, N=N), "none", "none", identity, 0.16, continuous=True,
        lamb_schedule=utils.lambda_schedule_linear(1.0, 0.2), sens=sens, mask=mask, m_steps=m_steps,
        generator=torch.Generator().manual_seed(0), callback=lambda i, n, x: seen.append((i, x.clone())))
    fn(ToyScore(), torch.zeros_like(y), y)
    assert [i for i, _ in seen] == list(range(N))
    ref = NumpySense(sens[0].numpy().astype(np.complex128), mask[0, 0].numpy().astype(np.float64),
                     y[0].numpy().astype(np.complex128))
    xs = [x[0].numpy().astype(np.complex128) for _, x in seen]   # [C, H, W] after iteration i
    scale = np.abs(xs[0]).max()
    stepped = []
    for i in range(1, N):
        before = ref.project(xs[i - 1])        # the predictor/corrector are off: DC is all that precedes
        delta = xs[i] - before
        if i % m_steps:
            assert np.abs(delta).max() < 1e-5 * scale, f"iteration {i}: no SENSE step expected"
            continue
        d = ref.sense_direction(before)
        lamb = float(np.vdot(d, delta).real / np.vdot(d, d).real)       # the lambda the sampler used
        assert lamb == pytest.approx(1.0 + (0.2 - 1.0) * i / N, rel=1e-3), f"iteration {i}"
        np.testing.assert_allclose(xs[i], before + lamb * d, rtol=0, atol=1e-5 * scale)
        assert ref.residual(xs[i]) < 0.9 * ref.residual(before), "the SENSE step reduces ||y - A S^H x||"
        stepped.append(i)
    assert stepped == [3, 6]


def test_alg5_differs_from_alg4_with_the_same_noise():
    """Same generator seed and settings: the SENSE step is what separates Algorithm 5 from Algorithm 4."""
    sens, mask, y = sense_problem()
    sde = sde_lib.VESDE(0.01, 20, N=4)
    kw = dict(continuous=True, mask=mask)
    out4 = sampling.get_pc_fouriercs_RI_PI_SSOS(sde, "reverse_diffusion", "langevin", identity, 0.16,
                                                generator=torch.Generator().manual_seed(1), **kw)(
        ToyScore(), torch.zeros_like(y), y)
    out5 = sampling.get_pc_fouriercs_RI_coil_SENSE(sde, "reverse_diffusion", "langevin", identity, 0.16,
                                                   sens=sens, m_steps=2, generator=torch.Generator().manual_seed(1),
                                                   **kw)(ToyScore(), torch.zeros_like(y), y)
    assert out4.shape == out5.shape == y.shape
    assert (out5 - out4).abs().max() > 1e-2 * out4.abs().max()


# ---------------------------------------------------------------------------------------------- command line

SIGMA_MIN, SIGMA_MAX = 0.01, 378.0   # the knee config's VE-SDE


def sigma_of(t: float) -> float:
    """VE noise level sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny config, a random-weight checkpoint for it and a 32 x 32 magnitude image."""
    d = tmp_path_factory.mktemp("wiring")
    cfg, ckpt = write_tiny_model(d, sampling={"N": 2, "N_multi_coil": 2, "predictor": "reverse_diffusion",
                                              "corrector": "langevin", "n_steps_each": 1, "snr": 0.16})
    yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
    magnitude = np.exp(-3 * (xx ** 2 + yy ** 2)) + 0.2 * (xx > 0.3)
    (d / "real").mkdir()
    (d / "complex").mkdir()
    np.save(d / "real" / "case.npy", magnitude.astype(np.float32))
    np.save(d / "complex" / "case.npy", (magnitude * np.exp(0.5j * xx)).astype(np.complex64))
    return {"config": cfg, "ckpt": ckpt, "real": d / "real" / "case.npy",
            "single-coil": d / "complex" / "case.npy"}


class NetworkSpy:
    """Records every call of the score network (its input x and noise level sigma); ``score``, when set,
    replaces the network's output with score(x, sigma)."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.score = None

    def hook(self, module, args, output):
        x, sigma = args[0].detach().clone(), args[1].detach().clone()
        self.calls.append((x, sigma))
        return None if self.score is None else self.score(x, sigma)

    @property
    def sigmas(self) -> list[float]:
        """The noise level of each call (one per call: all batch entries share it)."""
        return [float(s.reshape(-1)[0]) for _, s in self.calls]


@pytest.fixture
def spy(monkeypatch):
    """A NetworkSpy hooked into every model ``models.utils.create_model`` builds during the test."""
    from models import utils as mutils
    spy, create_model = NetworkSpy(), mutils.create_model

    def spied_create_model(*args, **kwargs):
        model = create_model(*args, **kwargs)
        model.register_forward_hook(spy.hook)
        return model

    monkeypatch.setattr(mutils, "create_model", spied_create_model)
    return spy


SCRIPTS = {"real": "inference_real.py", "single-coil": "inference_single-coil.py"}


def run_cli(key: str, tiny: dict, tmp_path: Path, *flags: str) -> dict:
    """An inference script in-process with the tiny model (input: a magnitude or a complex 32 x 32 image)."""
    from score_mri.cli import common as ic
    spec = importlib.util.spec_from_file_location(f"_wiring_{key.replace('-', '_')}", REPO / SCRIPTS[key])
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--config", str(tiny["config"]), "--ckpt", str(tiny["ckpt"]), "--device", "cpu", "--seed", "0",
            "--data", str(tiny[key]), "--save_dir", str(tmp_path / "out"), *flags]
    return ic.run(script.ALGORITHM, argv)


@pytest.mark.parametrize("flags, calls, steps", [
    ((), 2 * 2, 2),                                                  # the config: N = 2, one corrector step
    (("--N", "3", "--m", "2"), 3 * 3, 3),
    (("--N", "3", "--corrector", "none"), 3, 3),
    (("--N", "2", "--predictor", "none", "--m", "3"), 2 * 3, 2),
])
def test_cli_N_m_predictor_corrector_set_what_runs(tiny, tmp_path, spy, flags, calls, steps):
    """Network calls = N (1 + m) for a predictor plus m Langevin steps; N noise levels from sigma_max down."""
    record = run_cli("real", tiny, tmp_path, *flags)
    assert len(spy.calls) == calls and record["network_calls"] == calls
    assert len(set(spy.sigmas)) == steps
    assert spy.sigmas == sorted(spy.sigmas, reverse=True)
    assert spy.sigmas[0] == pytest.approx(SIGMA_MAX, rel=1e-4)
    assert spy.sigmas[-1] == pytest.approx(sigma_of(1e-5), rel=1e-3)


def test_cli_t0_and_center_fraction_reach_the_run(tiny, tmp_path, spy):
    """--t0 0.3: the grid starts at sigma(0.3) (not sigma_max); --center_fraction 0.5: the central
    int(32 * 0.5) = 16 columns are sampled even at x8."""
    record = run_cli("real", tiny, tmp_path, "--N", "3", "--t0", "0.3", "--acc_factor", "8",
                     "--center_fraction", "0.5")
    assert spy.sigmas[0] == pytest.approx(sigma_of(0.3), rel=1e-4)
    assert max(spy.sigmas) <= sigma_of(0.3) * (1 + 1e-4) and len(set(spy.sigmas)) == 3
    assert record["network_calls"] == 3 * 2
    mask = np.load(tmp_path / "out" / "real" / "retrospective" / "input" / "case_mask.npy")
    assert mask.shape == (32, 32) and (mask[:, 8:24] == 1).all()


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral_sampling"])
def test_cli_predictor_reaches_the_sampler(tiny, tmp_path, spy, predictor):
    """Algorithm 3 with a zero score: the first step only adds noise to the unmeasured k-space, with std
    sqrt(sigma_0^2 - sigma_1^2) (reverse diffusion: ~sigma_max here) or sigma_1 sqrt(1 - sigma_1^2 / sigma_0^2)
    (ancestral: ~sigma_min); data consistency is an exact projection, so nothing else moves."""
    spy.score = lambda x, sigma: torch.zeros_like(x)
    record = run_cli("single-coil", tiny, tmp_path, "--N", "2", "--corrector", "none", "--predictor", predictor)
    (x0, _), (x1, _) = spy.calls                      # [2, 1, H, W]: real and imaginary parts
    unmeasured = 1 - record["sampled_fraction"]
    jump = float((x1 - x0).pow(2).mean().sqrt()) / math.sqrt(unmeasured)
    expected = SIGMA_MAX if predictor == "reverse_diffusion" else sigma_of(1e-5)
    assert jump == pytest.approx(expected, rel=0.15)


def test_cli_snr_sets_the_langevin_step(tiny, tmp_path, spy):
    """Langevin with a constant unit score s: x1 - x0 = eps s + sqrt(2 eps) z with eps = 2 (snr ||z|| / ||s||)^2,
    so the spread of x1 - x0 gives eps ~ 2 snr^2 (to the few % that ||z||^2 / n deviates from 1)."""
    snr = 0.4                                                         # the config's is 0.16
    spy.score = lambda x, sigma: torch.ones_like(x)
    run_cli("real", tiny, tmp_path, "--N", "1", "--predictor", "none", "--m", "2", "--snr", str(snr))
    (x0, _), (x1, _) = spy.calls
    d = (x1 - x0).double().reshape(-1)
    step = float(((d - d.mean()) ** 2).sum()) / (2 * (d.numel() - 1))
    assert step == pytest.approx(2 * snr ** 2, rel=0.2)
    assert float(d.mean()) == pytest.approx(step, abs=4 * math.sqrt(2 * step / d.numel()))
