"""GPU report: op/ parity, NCSN++ forward speed, Algorithm 2 seconds per slice, training steps per second.

One command on a GPU machine, under 8 minutes (``--budget_s``, default 420 s of measurement; whatever does
not fit is skipped with a note):

  python benchmarks/gpu_report.py                                  # -> benchmarks/results/gpu_<device>.{md,json}
  python benchmarks/gpu_report.py --device cpu --tiny --out /tmp/r # seconds; checks the script, numbers meaningless

Sections (in the written order):
  op_parity   the compiled CUDA ops (JIT-built here, as on a user's first GPU run) against the pure-PyTorch
              path, forward and backward, float32 and bfloat16: errors relative to the pure path in float64
              (``op._jit``'s self-check), plus the pure path's own errors; build seconds; the auto decision.
  forward     the paper's NCSN++ (configs/ve/fastmri_knee_320_ncsnpp_continuous.py, random weights) at 320x320,
              pure PyTorch vs the CUDA ops; float32 (no TF32), TF32, bf16 autocast; batch 1 and 30.
  algorithm2  seconds per slice of Algorithm 2 (``sampling.get_pc_fouriercs_fast``, 320x320, gaussian1d x4):
              the paper's sampler (reverse diffusion + Langevin, N=2000) with the knee model, and the few-step
              default of the embedded config (its predictor, corrector, snr and N) with the knee model and with
              the embedded prior. A run that does not fit the budget is timed over its first iterations and
              extrapolated to N (marked in the table).
  training    Adam steps per second (``losses.get_step_fn``: loss, backward, clipping, EMA) for the knee config
              and the embedded config, each at its own batch size, image size and bf16 setting.

``--tiny`` shrinks every model, image, batch and N so that all sections run in seconds (on the CPU, the
compiled ops cannot run, so their rows are left out with a note). With ``--tiny`` nothing is written unless
``--out`` is given. The timed paths use ``op._jit.forced``: ``SCORE_MRI_CUDA_OPS`` does not change the report.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import re
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

KNEE = "configs.ve.fastmri_knee_320_ncsnpp_continuous"
EMBEDDED = "configs.ve.colin27_ncsnpp_small"
EMBEDDED_WEIGHTS = common.REPO / "weights" / "colin27_ncsnpp_small.pth"
SIGMA = 10.0                      # noise level of the timed forwards (the cost does not depend on it)
PRECISIONS = ("fp32", "tf32", "bf16")
PATHS = ("pytorch", "cuda_ops")

FULL = {"size": 320, "batches": (1, 30), "paper_N": 2000, "reps": {1: 10, 30: 3}, "train_steps": 10}
TINY = {"size": 16, "batches": (1, 2), "paper_N": 4, "few_N": 2, "reps": {1: 1, 2: 1}, "train_steps": 1,
        "train_batch": 2}


class UserError(Exception):
    """A bad command line or environment: one line on stderr, exit status 2, no files."""


# ----------------------------------------------------------------------------------------------------------
# Budget and small helpers
# ----------------------------------------------------------------------------------------------------------

class Budget:
    """Wall-clock budget of the whole report; ``notes`` collects what was skipped or cut short."""

    def __init__(self, seconds: float):
        self.t0, self.seconds, self.notes = time.perf_counter(), float(seconds), []

    def left(self) -> float:
        """Seconds of the budget still available."""
        return self.seconds - (time.perf_counter() - self.t0)

    def elapsed(self) -> float:
        """Seconds since the report started."""
        return time.perf_counter() - self.t0

    def allows(self, estimate_s: float, what: str) -> bool:
        """True if ``estimate_s`` fits; otherwise note that ``what`` is skipped and return False."""
        if estimate_s <= self.left():
            return True
        self.notes.append(f"{what}: skipped (needs ~{estimate_s:.0f} s, {max(self.left(), 0):.0f} s of the "
                          f"{self.seconds:.0f} s budget left)")
        return False


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message'."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def slug(text: str) -> str:
    """'NVIDIA H200' -> 'nvidia_h200'."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "device"


def load_config(module: str, tiny: bool):
    """``get_config()`` of a config module; ``tiny`` shrinks the model (same block types, attention kept)."""
    config = importlib.import_module(module).get_config()
    if tiny:
        config.model.nf = 8
        config.model.ch_mult = (1, 2, 2)
        config.model.num_res_blocks = 1
        config.model.attn_resolutions = (8,)
        config.data.image_size = TINY["size"]
        config.training.batch_size = TINY["train_batch"]
    return config


def make_model(config, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """NCSN++ of ``config`` with weights drawn from ``seed`` (global RNG state restored afterwards)."""
    from models import utils as mutils

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = mutils.create_model(config, device=torch.device("cpu"))
    return model.to(device)


def n_params(model: torch.nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in model.parameters())


def sync(device: torch.device) -> None:
    """Wait for queued GPU work."""
    common.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, reps: int, deadline: float) -> list[float]:
    """Seconds of up to ``reps`` calls of ``fn`` (at least one), stopping at ``deadline`` (perf_counter)."""
    times = []
    while len(times) < reps and (not times or time.perf_counter() < deadline):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def ops_path(path: str):
    """Context forcing the op/ path: 'pytorch' (off) or 'cuda_ops' (on)."""
    from op import _jit

    return _jit.forced("off" if path == "pytorch" else "on")


@contextlib.contextmanager
def precision(name: str, device: torch.device) -> Iterator[None]:
    """'fp32' (TF32 off), 'tf32' (TF32 convolutions and matmuls) or 'bf16' (autocast, TF32 on)."""
    saved = tf32_get()
    tf32_set(tf32_values(name in ("tf32", "bf16")))
    try:
        if name == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        tf32_set(saved)


def _new_tf32_api() -> bool:
    """torch >= 2.9 has ``fp32_precision``; mixing it with ``allow_tf32`` raises, so only one API is used."""
    return hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")


def tf32_get() -> tuple:
    """The current TF32 settings (cuDNN convolutions, cuDNN RNNs, matmuls) in this torch's API."""
    if _new_tf32_api():
        return (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision,
                torch.backends.cuda.matmul.fp32_precision)
    return (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def tf32_set(values: tuple) -> None:
    """Apply settings in the form :func:`tf32_get` returns."""
    conv, rnn, matmul = values
    if _new_tf32_api():
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cudnn.rnn.fp32_precision = rnn  # conv and rnn kept equal while a row runs
        torch.backends.cuda.matmul.fp32_precision = matmul
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def tf32_values(on: bool) -> tuple:
    """TF32 on or off for convolutions and matmuls, in this torch's API."""
    if _new_tf32_api():
        return ("tf32",) * 3 if on else ("ieee",) * 3
    return on, on, on


# ----------------------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------------------

def section_op_parity(device: torch.device, budget: Budget) -> dict:
    """Build the CUDA ops as a first GPU run does (auto: build + self-check) and report the check records."""
    from op import _jit

    mods = [importlib.import_module("op.upfirdn2d"), importlib.import_module("op.fused_act")]  # registered
    out: dict = {"decision": {}, "warnings": [], "rows": []}
    if device.type != "cuda":
        out["note"] = "compiled kernels need a CUDA device: not built; rows give the pure-PyTorch path only"
        for mod in mods:
            out["rows"] += _jit.run_parity(mod.EXTENSION, None, device)
        return out
    with warnings.catch_warnings(record=True) as caught, _jit.forced("auto"):
        warnings.simplefilter("always")
        for mod in mods:
            mod._load_cuda()
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, _jit.CudaOpsWarning)]
    status = _jit.status()
    for label, st in status.items():
        out["decision"][label] = {"built": st["built"], "build_s": st["build_s"], "error": st["error"],
                                  "path": "pytorch (fallback)" if st["fallback"] else "cuda_ops"}
        out["rows"] += st["checks"] or []
    for st in status.values():
        if not st["built"]:  # still show the pure path's numbers
            out["rows"] += _jit.run_parity(st["extension"], None, device)
    return out


def section_forward(device: torch.device, sizes: dict, tiny: bool, budget: Budget, share: float,
                    cuda_ops_ok: bool | None) -> dict:
    """Seconds per NCSN++ forward (knee config) per path, precision and batch."""
    from score_mri import perf

    config = load_config(KNEE, tiny)
    model = perf.prepare_model_for_inference(make_model(config, device), device)
    S = sizes["size"]
    flops_per_image = None
    with torch.inference_mode():
        x1 = torch.rand(1, 1, S, S, generator=torch.Generator().manual_seed(1)).to(device)
        try:
            flops_per_image, _ = common.count_flops(lambda: model(x1, torch.full((1,), SIGMA, device=device)))
        except Exception as exc:  # noqa: BLE001 - FLOPs are a nicety
            budget.notes.append(f"forward: FLOP count failed ({one_line(exc)})")
    paths = ["pytorch"] + (["cuda_ops"] if device.type == "cuda" and cuda_ops_ok is not None else [])
    out: dict = {"config": KNEE, "params": n_params(model), "size": S, "flops_per_image": flops_per_image,
                 "rows": []}
    if device.type != "cuda":
        out["note"] = "cuda_ops rows need a CUDA device"
    elif cuda_ops_ok is None:
        out["note"] = "cuda_ops rows left out: the CUDA ops did not build"
    elif not cuda_ops_ok:
        out["note"] = "cuda_ops rows time kernels that FAILED the parity check (the auto path would not use them)"
    plan = [(b, p, q) for b in sizes["batches"] for p in paths for q in PRECISIONS]  # batch 1 rows first
    section_end = time.perf_counter() + share * max(budget.left(), 0)
    per_call: dict = {}
    ref_out: dict = {}
    for k, (B, path, prec) in enumerate(plan):
        what = f"forward {path} {prec} batch {B}"
        row_share = (section_end - time.perf_counter()) / (len(plan) - k)
        one = per_call.get((path, prec, sizes["batches"][0]))
        estimate = 2 * one * B / sizes["batches"][0] if one else 0.0  # warm-up + one timed call
        if not budget.allows(estimate, what):
            continue
        if one and estimate > row_share and not tiny:
            budget.notes.append(f"{what}: skipped (~{estimate:.0f} s, more than its share of the budget)")
            continue
        x = torch.rand(B, 1, S, S, generator=torch.Generator().manual_seed(2)).to(device)
        sigma = torch.full((B,), SIGMA, device=device)
        try:
            with ops_path(path), precision(prec, device), torch.inference_mode():
                y = model(x, sigma)  # warm-up (cuDNN plans, allocator)
                times = time_calls(lambda: model(x, sigma), device, sizes["reps"][B],
                                   time.perf_counter() + max(row_share, 0))
        except Exception as exc:  # noqa: BLE001 - keep the rest of the report
            budget.notes.append(f"{what}: failed ({one_line(exc)})")
            continue
        t = statistics.median(times)
        per_call[(path, prec, B)] = t
        y = y.float()
        if (path, prec) == ("pytorch", "fp32"):
            ref_out[B] = y
        ref = ref_out.get(B)
        row = {"path": path, "precision": prec, "batch": B, "calls": len(times), "s_per_call": t,
               "min_s": min(times), "images_per_s": B / t,
               "tflops": flops_per_image * B / t / 1e12 if flops_per_image else None,
               "rel_diff_vs_pytorch_fp32": float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
               if ref is not None else None}
        out["rows"].append(row)
    for row in out["rows"]:
        base = per_call.get(("pytorch", row["precision"], row["batch"]))
        row["speedup_vs_pytorch"] = base / row["s_per_call"] if base else None
    return out


def _problem(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth random [1, 1, S, S] image in [0, 1], a gaussian1d x4 mask (seed 0) and its k-space."""
    import utils
    from score_mri.physics.operators import SingleCoilCartesian

    g = torch.Generator().manual_seed(3)
    low = torch.rand(1, 1, size // 8, size // 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    img = ((img - img.min()) / (img.max() - img.min())).to(device)
    mask = utils.get_mask(img, size, 1, type="gaussian1d", acc_factor=4, center_fraction=0.08, seed=0).float()
    return img, mask, SingleCoilCartesian(mask).A(img.to(torch.complex64))


class _Stop(Exception):
    """Raised by the progress callback to end a run that is timed over its first iterations only."""


def time_algorithm2(model, config, device: torch.device, size: int, N: int, predictor: str, corrector: str,
                    snr: float, max_s: float) -> dict:
    """Run Algorithm 2 once (or its first iterations, when it would exceed ``max_s``): seconds per slice."""
    import sampling
    import sde_lib
    import utils

    img, mask, Fy = _problem(size, device)
    sde = sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max, N=N)
    done = {"steps": 0}
    calls = [0]
    t0 = [0.0]

    def callback(i: int, n: int, x) -> None:
        done["steps"] = i + 1
        if i + 1 < n and time.perf_counter() - t0[0] > max_s:
            raise _Stop

    fn = sampling.get_pc_fouriercs_fast(sde, sampling.get_predictor(predictor), sampling.get_corrector(corrector),
                                        utils.get_data_inverse_scaler(config), snr=snr, n_steps=1,
                                        continuous=config.training.continuous,
                                        generator=torch.Generator(device=device).manual_seed(0), callback=callback)
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    data = utils.get_data_scaler(config)(img)
    try:
        sync(device)
        t0[0] = time.perf_counter()
        try:
            with torch.no_grad():
                x = fn(model, data, mask, Fy)
            finite = bool(torch.isfinite(x).all())
        except _Stop:
            finite = None
        sync(device)
        seconds = time.perf_counter() - t0[0]
    finally:
        hook.remove()
    steps = max(done["steps"], 1)
    return {"N": N, "predictor": predictor, "corrector": corrector, "snr": snr, "steps_timed": steps,
            "network_calls_timed": calls[0], "network_calls_per_slice": calls[0] * N / steps,
            "seconds_timed": seconds, "s_per_slice": seconds * N / steps, "extrapolated": steps < N,
            "output_finite": finite}


def section_algorithm2(device: torch.device, sizes: dict, tiny: bool, budget: Budget, share: float,
                       paper: bool) -> dict:
    """Few-step rows (``paper=False``) or the paper's N=2000 row (``paper=True``) of Algorithm 2."""
    from score_mri import perf

    emb = load_config(EMBEDDED, tiny)
    few = {"N": TINY["few_N"] if tiny else int(emb.sampling.N), "predictor": emb.sampling.predictor,
           "corrector": emb.sampling.corrector, "snr": float(emb.sampling.snr)}
    knee = load_config(KNEE, tiny)
    if paper:
        runs = [("knee (paper), random weights", KNEE, knee,
                 {"N": sizes["paper_N"], "predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16})]
    else:
        runs = [("embedded prior", EMBEDDED, emb, few), ("knee (paper), random weights", KNEE, knee, few)]
    rows = []
    section_end = time.perf_counter() + share * max(budget.left(), 0)
    for k, (label, module, config, s) in enumerate(runs):
        what = f"algorithm2 {label} N={s['N']}"
        row_s = (section_end - time.perf_counter()) / (len(runs) - k)
        if not budget.allows(2.0 if tiny else 10.0, what):
            continue
        try:
            model = make_model(config, device)
            weights = "random"
            if module == EMBEDDED and not tiny and EMBEDDED_WEIGHTS.is_file():
                from models.checkpoint import load_model_weights
                load_model_weights(EMBEDDED_WEIGHTS, model, device=device)
                weights = EMBEDDED_WEIGHTS.name
            model = perf.prepare_model_for_inference(model, device)
            with torch.inference_mode():  # warm-up outside the timed run
                xw = torch.rand(1, 1, sizes["size"], sizes["size"], generator=torch.Generator().manual_seed(4))
                model(xw.to(device), torch.full((1,), SIGMA, device=device))
            row = time_algorithm2(model, config, device, sizes["size"], max_s=max(row_s, 1e-3), **s)
        except Exception as exc:  # noqa: BLE001 - keep the rest of the report
            budget.notes.append(f"{what}: failed ({one_line(exc)})")
            continue
        row.update(model=label, config=module, weights=weights, params=n_params(model), size=sizes["size"])
        rows.append(row)
        del model
    return {"rows": rows}


def section_training(device: torch.device, sizes: dict, tiny: bool, budget: Budget, share: float) -> dict:
    """Training steps per second for the knee and the embedded config (each at its own batch and size)."""
    from score_mri.training import losses
    import sde_lib
    from models.ema import ExponentialMovingAverage

    rows = []
    runs = [("knee (paper)", KNEE), ("embedded prior", EMBEDDED)]
    section_end = time.perf_counter() + share * max(budget.left(), 0)
    for k, (label, module) in enumerate(runs):
        what = f"training {label}"
        row_s = (section_end - time.perf_counter()) / (len(runs) - k)
        if not budget.allows(2.0 if tiny else 10.0, what):
            continue
        config = load_config(module, tiny)
        B, S, bf16 = int(config.training.batch_size), int(config.data.image_size), bool(config.training.bf16)
        try:
            model = make_model(config, device).train()
            sde = sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                                N=config.model.num_scales)
            state = {"model": model, "optimizer": losses.get_optimizer(config, model.parameters()),
                     "ema": ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate),
                     "step": 0, "generator": torch.Generator().manual_seed(5)}
            step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config),
                                         reduce_mean=config.training.reduce_mean,
                                         continuous=config.training.continuous, bf16=bf16)
            batch = torch.rand(B, 1, S, S, generator=torch.Generator().manual_seed(6)).to(device)
            losses_seen = [step_fn(state, batch)]  # warm-up
            times = time_calls(lambda: losses_seen.append(step_fn(state, batch)), device, sizes["train_steps"],
                               time.perf_counter() + max(row_s, 0))
            loss = losses_seen[-1]
        except Exception as exc:  # noqa: BLE001 - keep the rest of the report
            budget.notes.append(f"{what}: failed ({one_line(exc)})")
            continue
        t = statistics.median(times)
        rows.append({"config": module, "model": label, "params": n_params(model), "batch": B, "size": S,
                     "bf16": bf16, "steps_timed": len(times), "s_per_step": t, "steps_per_s": 1.0 / t,
                     "images_per_s": B / t, "loss_finite": bool(torch.isfinite(loss))})
        del model, state
    return {"rows": rows, "path": "auto (CUDA ops when they built and passed the check)"}


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def to_markdown(report: dict) -> str:
    """The report as markdown tables."""
    m = report["meta"]
    md = [f"# GPU report: {m['device_name']}" + (" (TINY: shrunk models and sizes, numbers meaningless)"
                                                  if m["tiny"] else ""), "",
          f"torch {m['torch']}, CUDA {m['cuda']}, {m['device_name']}; {m['elapsed_s']:.0f} s of a "
          f"{m['budget_s']:.0f} s budget. Command: `{m['command']}`", ""]
    p = report["op_parity"]
    md += ["## op/ parity (compiled CUDA kernels vs the pure-PyTorch path)", "",
           "Errors: max |x - ref| / max |ref|, ref = the pure-PyTorch op in float64 on the same inputs; "
           "`compiled` = the CUDA kernel, `pytorch` = the pure path in the same dtype.", ""]
    if p.get("note"):
        md += [p["note"] + ".", ""]
    for label, d in p.get("decision", {}).items():
        md.append(f"* {label}: built {d['built']} in {common.fmt(d['build_s'])} s (JIT build, or load from "
                  f"torch's extension cache) -> **{d['path']}**"
                  + (f" ({d['error']})" if d["error"] else ""))
    md += [f"* warning: {w}" for w in p.get("warnings", [])]
    md += ["", common.markdown_table(p["rows"], [("op", "op"), ("case", "case"), ("dtype", "dtype"),
                                                 ("forward", "compiled fwd"), ("backward", "compiled bwd"),
                                                 ("pytorch_forward", "pytorch fwd"),
                                                 ("pytorch_backward", "pytorch bwd"), ("tol", "tol"),
                                                 ("ok", "ok")]), ""]
    f = report["forward"]
    md += [f"## NCSN++ forward ({f.get('params', 0) / 1e6:.1f} M parameters, {f.get('size')}x{f.get('size')}, "
           f"{common.fmt((f.get('flops_per_image') or 0) / 1e12)} TFLOP per image)", ""]
    if f.get("note"):
        md += [f["note"] + ".", ""]
    md += [common.markdown_table(f["rows"], [("path", "path"), ("precision", "precision"), ("batch", "batch"),
                                             ("s_per_call", "s / call"), ("images_per_s", "images / s"),
                                             ("tflops", "TFLOP/s"), ("speedup_vs_pytorch", "x vs pytorch"),
                                             ("rel_diff_vs_pytorch_fp32", "rel. diff vs pytorch fp32"),
                                             ("calls", "timed calls")]), ""]
    md += ["## Algorithm 2, seconds per slice", "",
           "`extrapolated`: timed over the first `steps` iterations and scaled to N (the budget did not allow "
           "the whole run).", "",
           common.markdown_table(report["algorithm2"]["rows"],
                                 [("model", "model"), ("weights", "weights"), ("predictor", "predictor"),
                                  ("corrector", "corrector"), ("N", "N"),
                                  ("network_calls_per_slice", "network calls"), ("steps_timed", "steps timed"),
                                  ("s_per_slice", "s / slice"), ("extrapolated", "extrapolated")]), ""]
    md += ["## Training steps per second", "",
           common.markdown_table(report["training"]["rows"],
                                 [("model", "config"), ("params", "parameters"), ("batch", "batch"),
                                  ("size", "size"), ("bf16", "bf16 autocast"), ("steps_per_s", "steps / s"),
                                  ("images_per_s", "images / s"), ("steps_timed", "steps timed")]), ""]
    if report["notes"]:
        md += ["## Notes", ""] + [f"* {n}" for n in report["notes"]] + [""]
    return "\n".join(md)


def _finite_or_none(v: Any) -> Any:
    """JSON-safe: non-finite floats become None (strict JSON has no inf/nan)."""
    return v if not isinstance(v, float) or math.isfinite(v) else None


def _clean(obj: Any) -> Any:
    """Recursively replace non-finite floats by None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _finite_or_none(obj)


# ----------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    class Parser(argparse.ArgumentParser):
        def error(self, message: str):
            raise UserError(message)

    ap = Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:<i> or cpu (cpu needs --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and sizes: seconds, numbers meaningless")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results; none with --tiny)")
    ap.add_argument("--budget_s", type=float, default=420.0, help="wall-clock budget of the measurements")
    return ap.parse_args(argv)


def resolve_device(name: str, tiny: bool) -> torch.device:
    """Validated torch.device (UserError when unusable)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"--device {name!r}: {one_line(exc)}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                            "use --device cpu --tiny to check the script")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type == "cpu":
        if not tiny:
            raise UserError("--device cpu needs --tiny (the full report is sized for a GPU; "
                            "benchmarks/forward_speed.py measures the CPU)")
    else:
        raise UserError(f"--device {name}: only cuda and cpu are supported")
    return device


def run(args: argparse.Namespace) -> dict:
    """Measure every section within the budget and return the report dict."""
    device = resolve_device(args.device, args.tiny)
    if not args.budget_s > 0:
        raise UserError(f"--budget_s must be > 0, got {args.budget_s}")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny check mode: one thread is fastest on a busy machine (speed meaningless)
    try:
        return _run(args, device)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, device: torch.device) -> dict:
    """:func:`run` on a validated device."""
    from op import _jit

    if device.type == "cuda":
        torch.cuda.set_device(device)
    sizes = dict(TINY if args.tiny else FULL)
    budget = Budget(args.budget_s)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report: dict = {"meta": {"device": str(device), "device_name": name, "slug": slug(name), "tiny": args.tiny,
                             "torch": torch.__version__, "cuda": torch.version.cuda, "budget_s": args.budget_s,
                             "cudnn_benchmark": torch.backends.cudnn.benchmark,
                             "cpu_threads": torch.get_num_threads(),
                             "tf32_default": list(tf32_get()),
                             "env_SCORE_MRI_CUDA_OPS": os.environ.get("SCORE_MRI_CUDA_OPS"),
                             "command": "python benchmarks/gpu_report.py " + " ".join(sys.argv[1:])}}

    def guarded(key: str, fn: Callable[[], dict]) -> dict:
        try:
            with _jit.forced("auto"):  # the timed paths never depend on $SCORE_MRI_CUDA_OPS
                return fn()
        except Exception as exc:  # noqa: BLE001 - a section failure is reported, the others still run
            budget.notes.append(f"{key}: failed ({one_line(exc)})")
            return {"rows": []}

    report["op_parity"] = guarded("op_parity", lambda: section_op_parity(device, budget))
    decision = report["op_parity"].get("decision", {}).get("op.upfirdn2d")
    rows_up = [r for r in report["op_parity"]["rows"] if r.get("op") == "upfirdn2d" and r.get("ok") is not None]
    cuda_ops_ok = None if not decision or not decision["built"] else all(r["ok"] for r in rows_up)
    # Shares of the budget left at each start: forward 40%, few-step runs 1/3, training 1/2, then the
    # paper's N=2000 run gets the rest (timed over its first iterations when it does not fit).
    report["forward"] = guarded("forward", lambda: section_forward(device, sizes, args.tiny, budget, 0.4,
                                                                   cuda_ops_ok))
    few = guarded("algorithm2", lambda: section_algorithm2(device, sizes, args.tiny, budget, 1 / 3, paper=False))
    report["training"] = guarded("training", lambda: section_training(device, sizes, args.tiny, budget, 0.5))
    paper = guarded("algorithm2", lambda: section_algorithm2(device, sizes, args.tiny, budget, 0.9, paper=True))
    report["algorithm2"] = {"rows": paper["rows"] + few["rows"],
                            "path": "auto (CUDA ops when they built and passed the check); torch's default "
                                    "TF32 settings"}
    report["notes"] = budget.notes
    report["meta"]["elapsed_s"] = budget.elapsed()
    order = ("meta", "op_parity", "forward", "algorithm2", "training", "notes")
    return _clean({k: report[k] for k in order})


def main(argv: list[str] | None = None) -> int:
    """Entry point: run, print the markdown, write gpu_<device>.{md,json}; 2 on user errors."""
    try:
        args = parse_args(argv)
        out_dir = Path(args.out) if args.out else (None if args.tiny else common.RESULTS)
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise UserError(f"--out {out_dir}: not a folder")
        report = run(args)
    except UserError as exc:
        print(f"gpu_report: {exc}", file=sys.stderr)
        return 2
    text = to_markdown(report)
    print(text)
    if out_dir is None:
        print("(--tiny without --out: nothing written)", file=sys.stderr)
        return 0
    jpath, mpath = common.write_results(f"gpu_{report['meta']['slug']}", report, text, out_dir)
    print(f"wrote {jpath} and {mpath}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
