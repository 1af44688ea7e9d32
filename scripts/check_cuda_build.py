"""Compile op/'s CUDA extensions without a GPU and report per extension: built, imported, or compiler errors.

Runs in an environment with a CUDA build of torch, ninja and a CUDA toolkit (nvcc, headers, libcudart);
``scripts/check_cuda_build.sh`` makes one from PyPI wheels in a throwaway venv and runs this file there.
No GPU is needed: ``TORCH_CUDA_ARCH_LIST`` (default "8.0;9.0") names the targets instead of the device.

The extension names and source lists are read from ``op``'s registry and compiled with the same call
``op/_jit.py`` makes (``torch.utils.cpp_extension.load`` with torch's default flags), only into a fresh
temporary build directory. Each built ``.so`` is then imported again in a separate process, as a plain
Python extension module, and its functions are listed.

    python scripts/check_cuda_build.py --json benchmarks/results/cuda_build.json

Exit status: 0 when every extension compiled and imported, 1 when one did not, 2 when the toolchain is
unusable (no CUDA build of torch, no nvcc, no ninja).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHS = "8.0;9.0"
MAX_ERROR_LINES = 20
# Distributions worth naming in the report (whatever is installed of them).
REPORTED_DISTS = ("torch", "ninja", "nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl",
                  "nvidia-cuda-runtime", "nvidia-cuda-nvcc-cu12", "nvidia-cuda-runtime-cu12",
                  "nvidia-cuda-cccl-cu12")

IMPORT_PROBE = """
import importlib.util, json, sys
import torch  # the extension links against libtorch / libc10, which torch loads
name, path = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location(name, path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(sorted(n for n in dir(mod) if not n.startswith("_"))))
"""


def find_cuda_home() -> str | None:
    """$CUDA_HOME if set, else the toolkit of the nvidia-* wheels on sys.path (site-packages/nvidia/cuXX)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    for entry in sys.path:
        hits = sorted(glob.glob(os.path.join(entry, "nvidia", "cu*", "bin", "nvcc")))
        if hits:
            return str(Path(hits[-1]).parents[1])
    return None


def tool_version(cmd: list[str]) -> str | None:
    """The first line of ``cmd``'s output that names a release or a dotted version (None if it cannot run)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for ln in lines:
        if "release" in ln or re.search(r"\d+\.\d+", ln):
            return ln
    return lines[0] if lines else None


def installed(dists: tuple[str, ...]) -> dict[str, str]:
    """{distribution: version} for those of ``dists`` that are installed."""
    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    return out


def diagnostics(log: str, kind: str, limit: int = MAX_ERROR_LINES) -> tuple[list[str], int]:
    """(first lines, count) of the compiler's ``kind`` ('error' or 'warning') diagnostics in a ninja log.

    gcc writes 'file:line:col: error: ...' (or 'fatal error'), cudafe 'file(line): error #N-D: ...', nvcc
    itself 'nvcc warning : ...'; each is kept with the line after it (the offending source line or the rest
    of the message).
    """
    pattern = re.compile(rf"(?:^|:|\bnvcc)\s*(?:fatal\s+)?{kind}\b", re.IGNORECASE)
    lines = log.splitlines()
    picked: list[str] = []
    count = 0
    for i, ln in enumerate(lines):
        if pattern.search(ln) and not ln.startswith(("[", "FAILED:", "ninja:")):
            count += 1
            if len(picked) < limit:
                picked.append(ln.rstrip())
                if i + 1 < len(lines) and lines[i + 1].strip() and not pattern.search(lines[i + 1]):
                    picked.append(lines[i + 1].rstrip())
    return picked[:limit], count


@contextlib.contextmanager
def captured_stdout_fd(path: Path) -> Iterator[None]:
    """Send file descriptor 1 (where torch's verbose ninja build writes) to ``path`` for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def registered_extensions() -> tuple[Path, list[tuple[str, tuple[str, ...], str]]]:
    """op's folder and its registry: (extension name, sources, public op) each (importing op compiles nothing)."""
    sys.path.insert(0, str(REPO))
    try:
        jit = importlib.import_module("op._jit")
    except ImportError:  # op/ moved into the package
        jit = importlib.import_module("score_mri.op._jit")
    importlib.import_module(jit.__name__.rsplit(".", 1)[0])  # the op modules register on import
    return Path(jit.MODULE_DIR), [(spec.name, spec.sources, spec.label) for spec in jit._REGISTRY.values()]


def ninja_flags(build_dir: Path) -> dict:
    """The compile flags torch wrote into build.ninja, include paths left out, and the -gencode targets."""
    ninja_file = build_dir / "build.ninja"
    if not ninja_file.exists():
        return {}
    text = ninja_file.read_text()
    out: dict = {"gencode": sorted(set(re.findall(r"-gencode=\S+|--generate-code=\S+", text)))}
    for key in ("cflags", "cuda_cflags"):
        m = re.search(rf"^{key} = (.*)$", text, re.MULTILINE)
        if m:
            flags = re.sub(r"(-isystem|-I)\s*\S+", " ", m.group(1))
            out[key] = " ".join(f for f in flags.split() if not f.startswith("-DTORCH_EXTENSION_NAME="))
    return out


def import_in_subprocess(name: str, so_path: Path) -> tuple[bool, list[str] | str]:
    """Import the built .so in a fresh interpreter; (True, its public names) or (False, the error's last line)."""
    proc = subprocess.run([sys.executable, "-c", IMPORT_PROBE, name, str(so_path)], capture_output=True,
                          text=True, timeout=300)
    if proc.returncode == 0:
        return True, json.loads(proc.stdout.strip().splitlines()[-1])
    tail = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return False, tail[-1] if tail else f"exit status {proc.returncode}"


def build_one(cpp_extension, op_dir: Path, name: str, sources: tuple[str, ...], build_root: Path) -> dict:
    """Compile one extension as op/_jit.build does, into its own directory; the record for the summary."""
    build_dir = build_root / name
    build_dir.mkdir(parents=True, exist_ok=True)
    rec: dict = {"extension": name, "sources": list(sources)}
    log_path = build_dir / "build.log"
    exc_line = None
    t0 = time.perf_counter()
    try:
        # verbose=True only so that ninja's output (compiler warnings included) reaches the log on success too.
        with captured_stdout_fd(log_path):
            cpp_extension.load(name, sources=[str(op_dir / s) for s in sources],
                               build_directory=str(build_dir), verbose=True)
        rec["built"] = True
    except Exception as exc:  # noqa: BLE001 - any failure is reported, the next extension still builds
        rec["built"] = False
        exc_line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    rec["build_s"] = round(time.perf_counter() - t0, 1)
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    rec["log_lines"] = len(log.splitlines())
    rec["errors"], rec["error_count"] = diagnostics(log, "error")
    rec["warnings"], rec["warning_count"] = diagnostics(log, "warning")
    if not rec["built"] and not rec["errors"]:  # no recognisable diagnostic: the exception and the log's tail
        rec["errors"] = [exc_line or "build failed"] + [ln.rstrip() for ln in log.splitlines()[-MAX_ERROR_LINES:]]
    rec.update(ninja_flags(build_dir))
    so_files = sorted(build_dir.glob(f"{name}*.so"))
    rec["so"] = [{"file": p.name, "bytes": p.stat().st_size} for p in so_files]
    if rec["built"] and so_files:
        ok, detail = import_in_subprocess(name, so_files[0])
        rec["imported"] = ok
        rec["functions" if ok else "import_error"] = detail
    else:
        rec["imported"] = False
    rec["ok"] = bool(rec["built"] and rec["imported"])
    return rec


def toolchain(cuda_home: str | None) -> dict:
    """What the build uses: torch, its CUDA version, nvcc, host compiler, ninja, arch list, wheels."""
    import torch
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "gpu_available": torch.cuda.is_available(),
        "cuda_home": cuda_home,
        "nvcc": tool_version([nvcc, "--version"]) if nvcc and os.path.exists(nvcc) else None,
        "host_compiler": tool_version([os.environ.get("CXX", "c++"), "--version"]),
        "ninja": tool_version(["ninja", "--version"]),
        "torch_cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "max_jobs": os.environ.get("MAX_JOBS"),
        "wheels": installed(REPORTED_DISTS),
    }


def preflight(tc: dict) -> list[str]:
    """Reasons the build cannot start (empty when it can)."""
    problems = []
    if not tc["torch_cuda"]:
        problems.append(f"torch {tc['torch']} is a CPU build (torch.version.cuda is None)")
    if not tc["cuda_home"]:
        problems.append("no CUDA toolkit: set CUDA_HOME or install the nvidia-cuda-nvcc wheel")
    elif not tc["nvcc"]:
        problems.append(f"no runnable nvcc under CUDA_HOME={tc['cuda_home']}")
    if not tc["ninja"]:
        problems.append("ninja is not on PATH (pip install ninja)")
    if tc["nvcc"] and tc["torch_cuda"]:
        m = re.search(r"release (\d+)\.(\d+)", tc["nvcc"])
        if m and m.group(1) != tc["torch_cuda"].split(".")[0]:
            problems.append(f"nvcc is CUDA {m.group(1)}.{m.group(2)} but torch was built for CUDA "
                            f"{tc['torch_cuda']} (major versions must match)")
    if tc["cuda_home"]:
        libdir = next((d for d in ("lib64", "lib") if os.path.isdir(os.path.join(tc["cuda_home"], d))), "lib64")
        if not os.path.exists(os.path.join(tc["cuda_home"], libdir, "libcudart.so")):
            problems.append(f"{tc['cuda_home']}/{libdir}/libcudart.so is missing (the link step uses -lcudart; "
                            f"check_cuda_build.sh links it to libcudart.so.<major>)")
    return problems


def print_summary(summary: dict) -> None:
    """Toolchain line, one line per extension (with its first errors or warnings), PASS/FAIL line."""
    tc = summary["toolchain"]
    print(f"torch {tc['torch']} (CUDA {tc['torch_cuda']}), nvcc: {tc['nvcc']}, "
          f"arch list {tc['torch_cuda_arch_list']}, GPU present: {tc['gpu_available']}")
    for rec in summary["extensions"]:
        if rec["ok"]:
            print(f"  OK    {rec['extension']:<28} {rec['build_s']:6.1f} s  {rec['so'][0]['file']} "
                  f"({rec['so'][0]['bytes'] / 1e6:.1f} MB), imports: {', '.join(rec['functions'])}; "
                  f"{rec['warning_count']} compiler warnings")
            for ln in rec["warnings"]:
                print(f"        {ln}")
        else:
            what = "import failed" if rec["built"] else "compile failed"
            print(f"  FAIL  {rec['extension']:<28} {rec['build_s']:6.1f} s  {what}")
            for ln in rec["errors"] or [rec.get("import_error", "")]:
                print(f"        {ln}")
    for p in summary.get("problems", []):
        print(f"  TOOLCHAIN: {p}")
    n_ok = sum(r["ok"] for r in summary["extensions"])
    print(f"{'PASS' if summary['ok'] else 'FAIL'}: {n_ok}/{len(summary['extensions'])} extensions compiled and "
          f"imported in {summary['total_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the summary here (e.g. benchmarks/results/cuda_build.json)")
    ap.add_argument("--build-dir", type=Path,
                    help="build here and keep the results (default: a temporary directory, removed afterwards)")
    args = ap.parse_args(argv)

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    cuda_home = find_cuda_home()
    if cuda_home:
        # torch.utils.cpp_extension reads CUDA_HOME once, on import.
        os.environ["CUDA_HOME"] = cuda_home
        os.environ["PATH"] = os.path.join(cuda_home, "bin") + os.pathsep + os.environ.get("PATH", "")

    t0 = time.perf_counter()
    tc = toolchain(cuda_home)
    summary: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "toolchain": tc,
                     "extensions": [], "problems": preflight(tc)}
    status = 2 if summary["problems"] else 0
    if not summary["problems"]:
        from torch.utils import cpp_extension
        build_root = args.build_dir or Path(tempfile.mkdtemp(prefix="score_mri_cuda_build_"))
        try:
            op_dir, extensions = registered_extensions()
            summary["op_dir"] = str(op_dir.relative_to(REPO)) if op_dir.is_relative_to(REPO) else str(op_dir)
            for name, sources, _label in extensions:
                print(f"building {name} from {', '.join(sources)} ...", flush=True)
                summary["extensions"].append(build_one(cpp_extension, op_dir, name, sources, build_root))
        finally:
            if args.build_dir is None:
                shutil.rmtree(build_root, ignore_errors=True)
        status = 0 if summary["extensions"] and all(r["ok"] for r in summary["extensions"]) else 1
    summary["total_s"] = round(time.perf_counter() - t0, 1)
    summary["ok"] = status == 0
    print_summary(summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"summary written to {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
