#!/usr/bin/env bash
# Install score-MRI (the score_mri package, editable, with its console commands) and its dependencies into the
# current Python environment.
# Works as `bash install.sh` and as `source install.sh` (it never exits or changes options of your shell).
#   TORCH_CUDA=1 bash install.sh   -> let pip choose a CUDA build of torch (GPU machines)
#   SKIP_APT=1   bash install.sh   -> do not install Debian packages (bart, mricron-data)
#   TRAIN_DATA=1 bash install.sh   -> also the PyPI packages holding the prior's other training images
_score_mri_install() (
    set -euo pipefail
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    py="${PYTHON:-python3}"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    echo "[install] python: $($py --version 2>&1)"
    if [ "${TORCH_CUDA:-0}" = "1" ]; then
        "$py" -m pip install --quiet "torch>=2.1,<2.14"
    else
        # CPU build first, so the requirement range below installs nothing more.
        "$py" -m pip install --quiet "torch==2.13.0"
    fi
    "$py" -m pip install --quiet -r "$here/requirements.txt"
    # The package itself, editable: `import score_mri` and the score-mri-* commands from anywhere.
    # (A plain `pip install .` also works; it ships weights/ and samples/ inside the package.)
    "$py" -m pip install --quiet --no-deps -e "$here" || "$py" -m pip install --quiet --no-deps --no-build-isolation -e "$here"
    if [ "${TRAIN_DATA:-0}" = "1" ]; then
        "$py" -m pip install --quiet dipy pydicom pydicom-data   # scripts/prepare_open_mri.py
    fi
    if [ "${SKIP_APT:-0}" != "1" ] && command -v apt-get >/dev/null 2>&1; then
        sudo=""
        if [ "$(id -u)" != "0" ]; then
            if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
                echo "[install] not root and no sudo: skipping apt packages (bart, mricron-data)"; sudo="skip"; fi
        fi
        if [ "$sudo" != "skip" ]; then
            # bart: classical reference reconstructor (benchmarks); mricron-data: Colin27 brain (training data).
            $sudo apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bart mricron-data >/dev/null
        fi
    fi
    (cd / && "$py" -c "import torch, numpy, scipy, sigpy, h5py, nibabel, ml_collections, skimage, score_mri; print('[install] ok: score_mri', score_mri.__version__, '| torch', torch.__version__, '| cuda', torch.cuda.is_available())")
)
_score_mri_install
_score_mri_rc=$?
if [ "$_score_mri_rc" != 0 ]; then echo "[install] FAILED (status $_score_mri_rc)" >&2; fi
# Return the status without closing the caller's shell when sourced.
(return 0 2>/dev/null) && { unset -f _score_mri_install; return "$_score_mri_rc"; }
exit "$_score_mri_rc"
