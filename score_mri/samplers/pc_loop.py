"""The predictor-corrector loop shared by every sampler, and its settings (Chung & Ye 2022, Algorithms 1-5).

:class:`SamplerSettings` holds every setting of a run (frozen: a renamed setting fails loudly);
:func:`run_loop` runs the steps of a fixed order at each time of the grid, each followed by the algorithm's
data consistency; complex images and coils become batch entries of the real-valued one-channel network
(a state [B, C, H, W] complex -> [B*C*2, 1, H, W]). ``sampling.py`` builds the paper's algorithms on it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from score_mri import sde as sde_lib
from score_mri.samplers.predictors import randn, real_dtype, get_corrector, get_predictor

Callback = Callable[[int, int, torch.Tensor], None]  # (i, N, x0): the step's denoised estimate
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """Every setting of a sampler run (the CLI fills it from flags and the config's ``sampling`` group)."""
    N: int = 50                                # number of noise levels (diffusion steps)
    predictor: str | type = "reverse_diffusion"
    corrector: str | type = "langevin"
    snr: float = 0.16                          # Langevin signal-to-noise ratio
    n_steps: int = 1                           # corrector steps per predictor step (the CLI's --m)
    sigma_min: float = 0.01
    sigma_max: float = 378.
    eps: float = 1e-5                          # last time of the grid
    t0: float | None = None                    # first time of the grid (None: T = 1, from pure noise)
    denoise: bool = True                       # return the last x_mean
    probability_flow: bool = False
    continuous: bool = True
    faithful: bool = False                     # the original's numerics and random-draw order
    batch_coils: bool = True                   # all coils in one network call (ignored when faithful)
    max_batch: int | None = None               # evaluate the network in chunks of at most this many images
    m_steps: int = 10                          # Algorithm 5: SENSE Kaczmarz step every m_steps iterations
    lamb_schedule: Any = None                  # Algorithm 5: lambda schedule (None: linear 1.0 -> 0.2)
    eta: float = 0.0                           # decomposed sampler: re-noising stochasticity (0 deterministic)
    grid: str = "ve"                           # time grid: 've' (linspace in t) or 'edm' (Karras rho = 7)
    cg_iters: int = 5                          # conjugate-gradient iterations of SENSE data consistency
    gamma: float = 0.1                         # weight of the estimate in (A^H A + gamma I) x = A^H y + gamma x_hat
    complex_mode: str = "ri"                   # complex data: 'ri' (real/imaginary parts), 'phase' or 'phase_ri'
    residual_smoothing: float = 0.0            # phase_ri: Gaussian std (pixels) for the final imaginary residual
    nonnegative: bool = False                  # Algorithm 2 and phase modes: final magnitude clipped at 0, then DC
    noise_weighting: str = "off"               # SENSE: 'auto' weights the estimate by the measured noise
    t0_clean: float | None = None              # SENSE, 'auto': start here when the data are clean (t0 unset)
    finish_after_dc: bool = False              # complex sampler, phase_ri: smooth and clip again after the final DC
    flip_cycle: bool = False                   # network calls cycle through the image's flips (not with faithful)

    def __post_init__(self):
        """Range checks (ValueError)."""
        if int(self.N) < 1:
            raise ValueError(f"N must be >= 1, got {self.N}")
        if int(self.n_steps) < 0:
            raise ValueError(f"n_steps must be >= 0, got {self.n_steps}")
        if not float(self.snr) > 0:
            raise ValueError(f"snr must be > 0, got {self.snr}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if int(self.m_steps) < 1:
            raise ValueError(f"m_steps must be >= 1, got {self.m_steps}")
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.grid not in ("ve", "edm"):
            raise ValueError(f"grid must be 've' or 'edm', got {self.grid!r}")
        if int(self.cg_iters) < 0 or not float(self.gamma) >= 0:
            raise ValueError(f"cg_iters must be >= 0 and gamma >= 0, got {self.cg_iters}, {self.gamma}")
        if self.complex_mode not in ("ri", "phase", "phase_ri"):
            raise ValueError(f"complex_mode must be 'ri', 'phase' or 'phase_ri', got {self.complex_mode!r}")
        if not 0.0 <= float(self.residual_smoothing) < math.inf:
            raise ValueError(f"residual_smoothing must be a finite number >= 0, got {self.residual_smoothing}")
        if self.noise_weighting not in ("off", "auto"):
            raise ValueError(f"noise_weighting must be 'off' or 'auto', got {self.noise_weighting!r}")
        for name in ("t0", "t0_clean"):
            t = getattr(self, name)
            if t is not None and not self.eps < float(t) <= 1.0:
                raise ValueError(f"{name} must lie in (eps, T] = ({self.eps}, 1.0], got {t}")

    @classmethod
    def from_config(cls, config: Any, *, coils: bool = False, **overrides: Any) -> "SamplerSettings":
        """Settings from a config: its ``sampling`` group holds the defaults, ``model`` the noise range;
        ``overrides`` (any field) win. ``coils``: a per-coil sampler, whose default N is
        ``sampling.N_multi_coil`` when the config has one (the paper's 500 for Algorithms 4-5)."""
        group = getattr(config, "sampling", None)

        def get(key: str, fallback: Any) -> Any:
            return group[key] if group is not None and key in group else fallback

        N = get("N", config.model.num_scales)
        t0 = get("t0", None)
        values: dict[str, Any] = dict(
            N=int(get("N_multi_coil", N) if coils else N), predictor=str(get("predictor", "reverse_diffusion")),
            corrector=str(get("corrector", "langevin")), snr=float(get("snr", 0.16)),
            n_steps=int(get("n_steps_each", 1)), sigma_min=float(config.model.sigma_min),
            sigma_max=float(config.model.sigma_max), t0=float(t0) if get("fast", False) and t0 is not None else None,
            continuous=bool(config.training.continuous), eta=float(get("eta", 0.0)), grid=str(get("grid", "ve")),
            cg_iters=int(get("cg_iters", 5)), gamma=float(get("gamma", 0.1)),
            complex_mode=str(get("complex_mode", "ri")),
            residual_smoothing=float(get("residual_smoothing", 0.0)), nonnegative=bool(get("nonnegative", False)),
            noise_weighting=str(get("noise_weighting", "off")),
            t0_clean=None if (t0_clean := get("t0_clean", None)) is None else float(t0_clean),
            finish_after_dc=bool(get("finish_after_dc", False)), flip_cycle=bool(get("flip_cycle", False)))
        if get("m_steps", None) is not None:
            values["m_steps"] = int(get("m_steps", None))
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampler setting(s) {', '.join(unknown)}; "
                             f"expected fields of SamplerSettings")
        return cls(**{**values, **overrides})

    @property
    def flips_network_input(self) -> bool:
        """Whether network calls cycle through the image's flips (``flip_cycle``; never with ``faithful``)."""
        return self.flip_cycle and not self.faithful

    def replace(self, **changes: Any) -> "SamplerSettings":
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def make_sde(self) -> sde_lib.VESDE:
        """The VE-SDE of these settings (N noise levels between sigma_min and sigma_max)."""
        return sde_lib.VESDE(sigma_min=self.sigma_min, sigma_max=self.sigma_max, N=self.N)


@dataclass
class Result:
    """A sampler's output: the final state (x_mean when ``denoise``), the number of network calls and what the
    sampler decided from the data (``info``; the SENSE sampler: its noise estimate and the start it took)."""
    x: torch.Tensor            # [B, C, H, W], the algorithm's state layout (real, complex or coil images)
    network_calls: int
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# The predictor-corrector loop
# ----------------------------------------------------------------------------------------------------------

DataConsistency = Callable[[torch.Tensor, torch.Tensor, slice, "float | None"], tuple[torch.Tensor, torch.Tensor]]
Project = Callable[[torch.Tensor, slice, "float | None"], torch.Tensor]  # (x0, coils, noise level of x0)
PostStep = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _to_parts(x: torch.Tensor) -> torch.Tensor:
    """Complex [B, C, H, W] -> real [B, C, 2, H, W] (real, imaginary); real x -> [B, C, 1, H, W]."""
    return torch.stack([x.real, x.imag], dim=2) if x.is_complex() else x.unsqueeze(2)


def _from_parts(xp: torch.Tensor, is_complex: bool) -> torch.Tensor:
    """Inverse of :func:`_to_parts`."""
    return torch.complex(xp[:, :, 0], xp[:, :, 1]) if is_complex else xp[:, :, 0]


def _apply_step(step, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor | None, z: torch.Tensor | None,
                split_parts: bool, channels: int, project: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one predictor/corrector ``step`` on x [B, c, H, W] (real or complex) through the real network.

    The parts (real, imaginary) go as one batch [B*c*P, channels, H, W], or one call per part with
    ``split_parts`` (the original's order: real first). ``z`` [k, B, c, P, H, W] or None (draw inside).
    ``project`` (state -> state) is handed to steps that project their clean estimate, in network shape.
    """
    xp = _to_parts(x)  # [B, c, P, H, W]
    out, out_mean = torch.empty_like(xp), torch.empty_like(xp)
    if step.projects and split_parts:
        raise ValueError("a projecting predictor needs all parts in one call (not with faithful=True)")
    for ps in ([slice(p, p + 1) for p in range(xp.shape[2])] if split_parts else [slice(None)]):
        x_in = xp[:, :, ps]
        x_net = x_in.reshape(-1, channels, *x_in.shape[-2:])  # [n, channels, H, W]
        vec_t = torch.ones(x_net.shape[0], device=x_net.device) * t
        vec_next = None if t_next is None else torch.ones(x_net.shape[0], device=x_net.device) * t_next
        z_net = None if z is None else z[:, :, :, ps].reshape(z.shape[0], *x_net.shape)  # [k, n, ...]

        def project_net(x0_net: torch.Tensor) -> torch.Tensor:
            """Data consistency of a clean estimate in network shape [n, channels, H, W]."""
            state = project(_from_parts(x0_net.reshape(x_in.shape), x.is_complex()))
            return _to_parts(state).reshape(x0_net.shape)

        x_new, x_new_mean = step(x_net, vec_t, z_net, vec_next, project_net if step.projects else None)
        out[:, :, ps] = x_new.reshape(x_in.shape)
        out_mean[:, :, ps] = x_new_mean.reshape(x_in.shape)
    return _from_parts(out, x.is_complex()), _from_parts(out_mean, x.is_complex())


def run_loop(x: torch.Tensor, *, steps: Sequence, timesteps: torch.Tensor, dc: DataConsistency,
             generator: torch.Generator, faithful: bool, split: bool, use_grid: bool, channels: int = 1,
             project: Project | None = None, post_step: PostStep | None = None,
             callback: Callback | None = None, sigmas: Sequence[float] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The predictor-corrector loop shared by Algorithms 1-5; returns the final (x, x_mean).

    x [B, C, H, W] (real or complex; C coils, or channels for Algorithm 1). For each time t_i and each
    coil group (all coils, or one coil at a time with ``split``), every step of ``steps`` is followed by
    ``dc(x_group, x_mean_group, coil_slice, sigma)`` (a projecting step gets ``project`` instead); then
    ``post_step(i, x, x_mean)`` and ``callback(i, N, x_mean)``. ``sigmas``: the noise level at each time, handed
    to the data consistency (None: none known): sigma_i after a corrector, sigma_{i+1} after a predictor step
    that moves the state to the next time (its own noise level; the last step keeps sigma_i).
    ``faithful``: noise drawn inside each call in the original's order; otherwise drawn once per
    iteration and step in the layout [k, B, C, P, H, W], so split and batched runs see the same noise.
    """
    n = len(timesteps)
    x_mean = x.clone()
    groups = [slice(c, c + 1) for c in range(x.shape[1])] if split else [slice(None)]
    zero = torch.zeros((), device=timesteps.device, dtype=timesteps.dtype)
    for i in range(n):
        t = timesteps[i]
        sigma = None if sigmas is None else float(sigmas[i])
        sigma_next = None if sigmas is None else float(sigmas[min(i + 1, n - 1)])
        t_next = (timesteps[i + 1] if i + 1 < n else zero) if use_grid else None
        zs = [None] * len(steps)
        if not faithful:
            shape = (*x.shape[:2], 2 if x.is_complex() else 1, *x.shape[2:])  # [B, C, P, H, W]
            zs = [randn((s.n_noise, *shape), generator, real_dtype(x), x.device) for s in steps]
        x_new, x_mean_new = (torch.empty_like(x), torch.empty_like(x_mean)) if split else (None, None)
        for sl in groups:
            xg, xg_mean = x[:, sl], x_mean[:, sl]
            proj = None if project is None else (lambda state, sl=sl: project(state, sl, sigma))
            for step, z in zip(steps, zs):
                xg, xg_mean = _apply_step(step, xg, t, t_next, None if z is None else z[:, :, sl],
                                          split, channels, proj)
                if not step.projects:
                    xg, xg_mean = dc(xg, xg_mean, sl, sigma_next if step.advances else sigma)
            if split:
                x_new[:, sl], x_mean_new[:, sl] = xg, xg_mean
            else:
                x_new, x_mean_new = xg, xg_mean
        x, x_mean = x_new, x_mean_new
        if post_step is not None:
            x, x_mean = post_step(i, x, x_mean)
        if callback is not None:
            callback(i, n, x_mean)  # the denoised estimate: progress frames show the image, not the noise
    return x, x_mean


# ----------------------------------------------------------------------------------------------------------
# Shared set-up: score function, steps, time grid, start noise
# ----------------------------------------------------------------------------------------------------------

# The flips of an image [..., H, W] that network call k of a flip-cycling sampler uses: k mod 4 picks one.
FLIP_CYCLE: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class CountingScore:
    """The model's score function, evaluated in chunks of ``max_batch``, counting the (batched) calls.

    With ``flip_cycle`` call k sees its input flipped by ``FLIP_CYCLE[k % 4]`` (none, left-right, up-down,
    both) and its score flipped back. The true score commutes with these flips, the network only nearly
    (trained with left-right flips only), so over a run the orientation bias of its errors averages out at
    no extra cost (README, "Flip cycling"; ``benchmarks/results/prior_quality_fp32*.md``).
    """

    def __init__(self, score_fn: ScoreFn, max_batch: int | None, flip_cycle: bool = False):
        self.score_fn, self.max_batch, self.flip_cycle, self.calls = score_fn, max_batch, flip_cycle, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s(x, t), chunked along the batch (flipped by this call's element of the cycle)."""
        dims = FLIP_CYCLE[self.calls % len(FLIP_CYCLE)] if self.flip_cycle else ()
        self.calls += 1
        x = torch.flip(x, dims) if dims else x
        if self.max_batch is None or x.shape[0] <= self.max_batch:
            score = self.score_fn(x, t)
        else:
            score = torch.cat([self.score_fn(x[k:k + self.max_batch], t[k:k + self.max_batch])
                               for k in range(0, x.shape[0], self.max_batch)])
        return torch.flip(score, dims) if dims else score


def make_steps(settings: SamplerSettings, sde, score_fn: ScoreFn, g: torch.Generator, order: str) -> list:
    """Step callables (x, t, z, t_next, project) -> (x, x_mean) in ``order`` ('CP' or 'PC'), one score function."""
    pred_cls = settings.predictor if isinstance(settings.predictor, type) else get_predictor(settings.predictor)
    corr_cls = settings.corrector if isinstance(settings.corrector, type) else get_corrector(settings.corrector)
    predictor_obj = pred_cls.from_settings(sde, score_fn, settings)
    corrector_obj = corr_cls.from_settings(sde, score_fn, settings)

    def predictor_step(x, t, z, t_next, project):
        extra = {"project": project} if predictor_obj.projects else {}
        return predictor_obj.update_fn(x, t, z=z, generator=g, t_next=t_next, **extra)

    def corrector_step(x, t, z, t_next, project):
        return corrector_obj.update_fn(x, t, z=z, generator=g)

    predictor_step.n_noise, predictor_step.projects = predictor_obj.n_noise, bool(predictor_obj.projects)
    predictor_step.advances = bool(predictor_obj.advances)
    corrector_step.n_noise, corrector_step.projects, corrector_step.advances = corrector_obj.n_noise, False, False
    return [{"P": predictor_step, "C": corrector_step}[c] for c in order]


def from_prior(settings: SamplerSettings) -> bool:
    """Whether sampling starts from the prior (t0 = T)."""
    return settings.t0 is None or float(settings.t0) >= 1.0


def time_grid(settings: SamplerSettings, device: torch.device) -> torch.Tensor:
    """The N times of the grid in float32, from t0 (T = 1 when sampling from noise) down to eps.

    've': linspace(t0, eps, N), the original's grid (geometric in sigma). 'edm': Karras et al. (2022), eq. 5,
    sigma_i = (s0^(1/rho) + i/(N-1) (s_eps^(1/rho) - s0^(1/rho)))^rho with rho = 7 between sigma(t0) and
    sigma(eps), mapped back to the VE time t = log(sigma / sigma_min) / log(sigma_max / sigma_min).
    """
    t_start = _t_start(settings)
    if settings.grid != "edm":
        return torch.linspace(t_start, settings.eps, settings.N, device=device)
    rho = 7.0
    smin, smax = float(settings.sigma_min), float(settings.sigma_max)
    ends = torch.tensor([t_start, settings.eps], dtype=torch.float64)
    s_start, s_end = (smin * (smax / smin) ** ends).tolist()
    frac = torch.linspace(0.0, 1.0, settings.N, dtype=torch.float64)
    sigma = (s_start ** (1 / rho) + frac * (s_end ** (1 / rho) - s_start ** (1 / rho))) ** rho
    t = torch.log(sigma / smin) / torch.log(torch.tensor(smax / smin, dtype=torch.float64))
    return t.to(device=device, dtype=torch.float32)


def _t_start(settings: SamplerSettings) -> float:
    """First time of the grid: t0 (T = 1 from noise), lowered for a predictor with ``max_sigma_ratio`` so
    that none of its N - 1 steps shrinks sigma by more than that ratio (few steps start nearer the data)."""
    t = 1.0 if from_prior(settings) else float(settings.t0)
    pred = settings.predictor if isinstance(settings.predictor, type) else get_predictor(settings.predictor)
    ratio = getattr(pred, "max_sigma_ratio", None)
    if ratio is None or settings.faithful:
        return t
    span = (settings.N - 1) * math.log(ratio) / math.log(settings.sigma_max / settings.sigma_min)
    return min(t, settings.eps + span)


def noise_levels(sde, timesteps: torch.Tensor) -> list[float] | None:
    """sigma(t) of the VE-SDE at each time of the grid; None for other SDEs (no single noise level)."""
    if not isinstance(sde, sde_lib.VESDE):
        return None
    return sde.marginal_prob(torch.zeros_like(timesteps), timesteps)[1].tolist()


def sigma_start(settings: SamplerSettings, sde) -> float:
    """Noise level of the start: sigma_max, or sigma(t0) in the few-step mode (or a capped start)."""
    t = _t_start(settings)
    if t >= 1.0:
        return sde.sigma_max
    return float(sde.marginal_prob(torch.zeros(1), torch.tensor([t]))[1])


def start_noise(shape: Sequence[int], g: torch.Generator, like: torch.Tensor, sigma: float,
                 is_complex: bool) -> torch.Tensor:
    """sigma z, z ~ N(0, I) real [shape] or complex (drawn as [B, C, 2, H, W]); like's device/precision."""
    dtype, device = real_dtype(like), like.device
    if not is_complex:
        return randn(shape, g, dtype, device) * sigma
    z = randn((shape[0], shape[1], 2, *shape[2:]), g, dtype, device) * sigma
    return torch.complex(z[:, :, 0], z[:, :, 1])


def make_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The given generator, or a fresh non-deterministically seeded one on ``device``."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.seed()
    return g
