"""Shared helpers of the speed benchmarks: timing with machine-load records, a same-run GEMM reference,
FLOP counting, isolated worker processes and JSON / markdown output.

Every timed call is recorded with the wall time, this process's user and system CPU time, the CPU time the
whole machine spent meanwhile (``/proc/stat``), hence the CPU time of *other* processes, the load average,
and the throughput of a 2048 x 2048 float32 ``torch.mm`` measured right before and right after. The
headline number is ``fraction_of_gemm`` = achieved FLOP/s / mean GEMM FLOP/s (wall clock, as in
``cpu_benchmarks.json``); on a shared machine ``fraction_of_gemm_cpu`` (both per CPU-second of this process)
is the steadier one. Numbers are trustworthy only when ``other_procs_cpu_s`` is near zero.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GEMM_N = 2048


# ----------------------------------------------------------------------------------------------------------
# Machine state
# ----------------------------------------------------------------------------------------------------------

def self_cpu_s() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``), None if unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    """Static description of the machine and the torch build."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else None
    except OSError:
        info["cpu_model"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_gflops(device: torch.device, n: int = GEMM_N, reps: int = 3) -> dict:
    """Throughput of an n x n float32 ``torch.mm`` (2 n^3 FLOP): wall and per CPU-second GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up (thread pool, GPU kernels)
    synchronize(device)
    u0, s0 = self_cpu_s()
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    synchronize(device)
    wall = time.perf_counter() - t0
    u1, s1 = self_cpu_s()
    flops = 2.0 * n ** 3 * reps
    cpu = (u1 - u0) + (s1 - s0)
    return {"gflops": flops / wall / 1e9, "cpu_gflops": flops / cpu / 1e9 if cpu > 0 else None}


def timed_call(fn: Callable[[], Any], device: torch.device, flops: float | None = None,
               gemm: bool = True) -> dict:
    """Run ``fn`` once and return its record (times, load, GEMM before/after, achieved fraction)."""
    g0 = gemm_gflops(device) if gemm else None
    load0 = loadavg()
    synchronize(device)
    busy0 = machine_busy_s()
    u0, s0 = self_cpu_s()
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    wall = time.perf_counter() - t0
    u1, s1 = self_cpu_s()
    busy1 = machine_busy_s()
    g1 = gemm_gflops(device) if gemm else None
    rec = {"time_s": wall, "user_s": u1 - u0, "sys_s": s1 - s0, "loadavg_before": load0, "loadavg_after": loadavg()}
    if busy0 is not None and busy1 is not None:
        rec["machine_busy_cpu_s"] = busy1 - busy0
        rec["other_procs_cpu_s"] = max(busy1 - busy0 - rec["user_s"] - rec["sys_s"], 0.0)
    if flops:
        rec["flops"] = flops
        rec["achieved_gflops"] = flops / wall / 1e9
        cpu = rec["user_s"] + rec["sys_s"]
        rec["achieved_cpu_gflops"] = flops / cpu / 1e9 if cpu > 0 and device.type == "cpu" else None
    if gemm:
        rec["gemm_gflops_before"], rec["gemm_gflops_after"] = g0["gflops"], g1["gflops"]
        if flops:
            rec["fraction_of_gemm"] = rec["achieved_gflops"] / ((g0["gflops"] + g1["gflops"]) / 2)
            if rec["achieved_cpu_gflops"] and g0["cpu_gflops"] and g1["cpu_gflops"]:
                rec["fraction_of_gemm_cpu"] = rec["achieved_cpu_gflops"] / ((g0["cpu_gflops"] + g1["cpu_gflops"]) / 2)
    return rec


def summarize(runs: list[dict]) -> dict:
    """Median / min wall time and median fractions over repeated records."""
    def med(key):
        vals = [r[key] for r in runs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    return {"runs": len(runs), "median_time_s": med("time_s"), "min_time_s": min(r["time_s"] for r in runs),
            "median_fraction_of_gemm": med("fraction_of_gemm"),
            "median_fraction_of_gemm_cpu": med("fraction_of_gemm_cpu"),
            "median_gemm_gflops": med("gemm_gflops_before"), "median_achieved_gflops": med("achieved_gflops"),
            "median_sys_s": med("sys_s"),
            "max_other_procs_cpu_s": max((r.get("other_procs_cpu_s") or 0.0) for r in runs),
            "median_loadavg_1m": med_load(runs)}


def med_load(runs: list[dict]) -> float | None:
    """Median of the 1-minute load average before each run."""
    vals = [r["loadavg_before"][0] for r in runs if r.get("loadavg_before")]
    return statistics.median(vals) if vals else None


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of one call by ``torch.utils.flop_counter`` (2 per MAC of conv/mm/bmm; elementwise not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


# ----------------------------------------------------------------------------------------------------------
# Worker processes (settings such as the glibc allocator cannot be undone inside one process)
# ----------------------------------------------------------------------------------------------------------

def run_worker(script: Path, spec: dict, timeout: float | None = None) -> dict:
    """Run ``python script --worker '<spec json>'`` and return the JSON object on its last stdout line."""
    cmd = [sys.executable, str(script), "--worker", json.dumps(spec)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), env=env, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"worker {spec} failed (exit {proc.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def fmt(v: Any, digits: int = 3) -> str:
    """Compact cell text for a markdown table."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Markdown table of ``rows`` with (key, header) ``columns``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_results(name: str, data: dict, markdown: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``.md`` (default ``benchmarks/results``); returns both paths."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    jpath, mpath = out_dir / f"{name}.json", out_dir / f"{name}.md"
    jpath.write_text(json.dumps(data, indent=1, default=str) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    return jpath, mpath
