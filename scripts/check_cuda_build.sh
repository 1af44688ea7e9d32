#!/usr/bin/env bash
# Compile op/'s CUDA kernels on a machine without a GPU, with a CUDA toolkit taken from PyPI wheels.
#
#   bash scripts/check_cuda_build.sh                                   # summary on stdout
#   bash scripts/check_cuda_build.sh --json benchmarks/results/cuda_build.json
#
# Creates (or reuses) a throwaway venv outside the repository, $CUDA_VENV (default /tmp/cuda_venv), with
# the CUDA build of torch and the matching nvcc, headers and runtime wheels (about 6 GB), then runs
# scripts/check_cuda_build.py there; its arguments are passed on. Not part of the test suite or CI.
# Environment: CUDA_VENV, PYTHON (the interpreter that makes the venv, default python3),
# TORCH_CUDA_ARCH_LIST (default "8.0;9.0"), MAX_JOBS (parallel compile jobs, default 2).
# Exit status: that of check_cuda_build.py (0 all built and imported, 1 a build failed, 2 no toolchain),
# or 3 when the venv could not be set up.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${CUDA_VENV:-/tmp/cuda_venv}"
py="${PYTHON:-python3}"

# torch 2.14.1 on x86_64 is built for CUDA 13.0: the compiler wheels are pinned to that release.
# nvidia-cuda-runtime (headers, libcudart) comes with torch; nvidia-cuda-nvcc would otherwise pull the
# newest nvidia-cuda-crt / nvidia-nvvm, which must match nvcc's release.
pins=(
    "torch==2.14.1"
    "ninja==1.13.2"
    "nvidia-cuda-nvcc==13.0.88"
    "nvidia-cuda-crt==13.0.88"
    "nvidia-nvvm==13.0.88"
    "nvidia-cuda-cccl==13.0.85"
)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
if [ ! -x "$venv/bin/python" ]; then
    echo "[cuda-build] creating venv $venv"
    "$py" -m venv "$venv" || exit 3
fi
stamp="$venv/.score_mri_pins"
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    echo "[cuda-build] installing ${pins[*]} (several GB on the first run)"
    t0=$SECONDS
    # pip warns about every missing local index folder: keep only the lines that matter.
    if ! "$venv/bin/python" -m pip install --quiet "${pins[@]}" 2> >(grep -v "is ignored: it is neither" >&2); then
        echo "[cuda-build] pip install failed" >&2
        exit 3
    fi
    echo "[cuda-build] installed in $((SECONDS - t0)) s"
    echo "${pins[*]}" > "$stamp"
fi

# The toolkit of the nvidia-* wheels: site-packages/nvidia/cu<major>/{bin/nvcc,include,lib}.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cuda_major="$("$venv/bin/python" -c 'import torch; print((torch.version.cuda or "").split(".")[0])' 2>/dev/null)"
if [ -z "$cuda_major" ]; then
    echo "[cuda-build] the torch in $venv is not a CUDA build" >&2
    exit 3
fi
cuda_home="$site/nvidia/cu$cuda_major"
# The wheels ship only libcudart.so.<major>; torch links extensions with -lcudart.
if [ -e "$cuda_home/lib/libcudart.so.$cuda_major" ] && [ ! -e "$cuda_home/lib/libcudart.so" ]; then
    ln -s "libcudart.so.$cuda_major" "$cuda_home/lib/libcudart.so"
fi

export CUDA_HOME="$cuda_home"
export PATH="$venv/bin:$cuda_home/bin:$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0;9.0}"
export MAX_JOBS="${MAX_JOBS:-2}"
# The venv has no NumPy; torch's warning about it says nothing about the build.
export PYTHONWARNINGS="ignore:Failed to initialize NumPy"
cd "$here/.."
exec nice -n 10 "$venv/bin/python" "$here/check_cuda_build.py" "$@"
