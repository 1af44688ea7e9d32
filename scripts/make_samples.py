"""Build the shipped samples under ``samples/`` from openly licensed data (README "Outputs" and samples/NOTICE.md).

Developer tool, not needed at run time or in CI. Every input comes from a package installed from
PyPI (``pip install nilearn dipy pydicom pydicom-data``); the training volume (Colin27) and
everything under ``../shared`` are never used. Deterministic: fixed slices, fixed seeds.
Writes the ``.npy`` files and ``samples/NOTICE.md`` (sources, licences, transforms, sha256).

    python scripts/make_samples.py            # writes <repo>/samples
    python scripts/make_samples.py --out DIR  # writes elsewhere (e.g. to compare two runs)
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import utils  # noqa: E402  (the project's FFTs and masks, so samples match what the scripts do)
from score_mri.physics.phase import smooth_phase  # noqa: E402  (the synthetic phase of the complex samples)

SIZE = 320  # single-coil / real samples, as the original's
MC_SIZE = 192  # multi-coil samples: smaller, to keep the CPU cost of Algorithms 4/5 sane
N_COILS = 8
# Prospective masks: gaussian1d x4 with the scripts' default centre fraction (README "Outputs" and samples/NOTICE.md).
MASK_KW = dict(type="gaussian1d", acc_factor=4, center_fraction=0.08)


# ----------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """One openly licensed input image: where it comes from and under which terms."""

    package: str  # PyPI distribution that ships the file
    file: str  # path inside the installed package
    licence: str
    note: str


PIP_HINT = "pip install nilearn dipy pydicom pydicom-data"


class MissingSource(Exception):
    """An input package or file is not installed."""


def _package_file(dist: str, rel: str) -> Path:
    """Absolute path of ``rel`` inside the installed distribution ``dist``."""
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        raise MissingSource(f"package '{dist}' is not installed ({PIP_HINT})") from None
    for f in files:
        if str(f).replace("\\", "/") == rel:
            return Path(f.locate())
    raise MissingSource(f"{rel} not found in the installed '{dist}' {metadata.version(dist)}")


MNI = Source(
    "nilearn", "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "MNI ICBM152 2009a template: 'Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging "
    "Centre, Montreal Neurological Institute, McGill University. Permission to use, copy, modify, "
    "and distribute this software and its documentation for any purpose and without fee is hereby "
    "granted, provided that the above copyright notice appear in all copies.' (as distributed by "
    "the MNI; nilearn itself is BSD-3-Clause)",
    "ICBM 2009a nonlinear symmetric T1 average of 152 adults (Fonov et al. 2009, 2011), 1 mm, "
    "as bundled (rescaled to uint8) in the nilearn wheel",
)
DIPY_T1 = Source(
    "dipy", "dipy/data/files/t1_coronal_slice.npy",
    "BSD-3-Clause (dipy's LICENSE covers the files it ships unless a file says otherwise)",
    "one coronal T1-weighted brain slice of one subject, 256x256, intensities in [0, 1]",
)
NEMA_MR2 = Source(
    "pydicom-data", "data_store/data/MR2_UNCR.dcm",
    "MIT (pydicom-data); the image is NEMA's public DICOM WG04 compression test set (MR2), "
    "published for free use in testing",
    "Philips 2D spin-echo shoulder MR, 1024x1024, 12-bit",
)
GDCM_ABD = Source(
    "pydicom-data", "data_store/data/MR-SIEMENS-DICOM-WithOverlays.dcm",
    "MIT (pydicom-data); originally a GDCM test file (GDCM: BSD-3-Clause)",
    "Siemens 3D gradient-echo abdomen MPR, 484x484 (the DICOM overlay plane is not used)",
)


def load_mni(axis: int, index: int) -> np.ndarray:
    """One slice of the MNI152 2009a T1 template, rotated so anterior/superior is up."""
    import nibabel as nib

    vol = np.asarray(nib.load(_package_file(MNI.package, MNI.file)).get_fdata(), np.float64)
    return np.rot90(np.take(vol, index, axis=axis))


def load_dipy_t1() -> np.ndarray:
    """dipy's bundled coronal T1 slice."""
    return np.load(_package_file(DIPY_T1.package, DIPY_T1.file)).astype(np.float64)


def load_dicom(src: Source) -> np.ndarray:
    """Stored pixel values of a single-frame DICOM file, as float64."""
    import pydicom

    return pydicom.dcmread(_package_file(src.package, src.file)).pixel_array.astype(np.float64)


# ----------------------------------------------------------------------------- transforms
def to_square(img: np.ndarray, size: int, margin: float = 0.06, thresh: float = 0.05) -> np.ndarray:
    """Crop to the object's bounding box (+margin), zero-pad to a square, resize to size x size, scale to [0, 1]."""
    img = np.clip(img, 0, None)
    rows, cols = np.nonzero(img > thresh * img.max())
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(round(max(r1 - r0, c1 - c0) * (1 + 2 * margin)))
    out = np.zeros((side, side))
    crop = img[r0:r1, c0:c1]
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    out[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    out = resize(out, (size, size), order=3, mode="constant", anti_aliasing=side > size)
    out = np.clip(out, 0, None)
    return (out / out.max()).astype(np.float32)


def coil_maps(n_coils: int, size: int) -> np.ndarray:
    """Simulated birdcage sensitivities (sigpy), normalised so that sqrt(sum_c |S_c|^2) = 1."""
    import sigpy.mri

    sens = sigpy.mri.birdcage_maps((n_coils, size, size), r=1.5, nzz=n_coils)  # [C, H, W]
    return sens / np.sqrt(np.sum(np.abs(sens) ** 2, axis=0, keepdims=True))


def gaussian1d_mask(size: int, seed: int) -> np.ndarray:
    """The project's gaussian1d x4 mask (utils.get_mask, explicit seed) as a [H, W] float32 array."""
    img = torch.zeros(1, 1, size, size)
    mask = utils.get_mask(img, size, 1, seed=seed, **MASK_KW)  # [1, 1, H, W]
    return mask[0, 0].numpy().astype(np.float32)


def alias(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero-filled image ifft2(fft2(x) * mask) in the single-coil shifted convention."""
    k = utils.fft2(torch.from_numpy(np.asarray(x, np.complex64))) * torch.from_numpy(mask)
    return utils.ifft2(k).numpy()


# ----------------------------------------------------------------------------- build
def build() -> list[tuple[str, np.ndarray, str, list[Source]]]:
    """All samples as (relative path, array, how it was made, sources)."""
    out = []
    add = lambda path, arr, how, *srcs: out.append((path, arr, how, list(srcs)))  # noqa: E731

    # Retrospective: magnitude images in [0, 1], three sources, three orientations.
    add("real/retrospective/001.npy", to_square(load_dipy_t1(), SIZE),
        "coronal brain T1 (one subject): crop to head + 6% margin, zero-pad square, cubic resize to "
        "320x320, clip >= 0, divide by max", DIPY_T1)
    add("real/retrospective/002.npy", to_square(load_mni(2, 90), SIZE),
        "axial slice z=90 (1-based 91) of the template: rot90, crop, pad, cubic resize to 320x320, "
        "divide by max", MNI)
    add("real/retrospective/003.npy", to_square(load_dicom(NEMA_MR2), SIZE),
        "shoulder (musculoskeletal, closest to the original's knees): crop, pad, anti-aliased cubic "
        "downsampling to 320x320, divide by max", NEMA_MR2)

    # Prospective 001: a real aliased image (the original's format; loses data).
    x = to_square(load_mni(0, 98), SIZE)
    mask = gaussian1d_mask(SIZE, seed=1)
    add("real/prospective/001.npy", alias(x, mask).real.astype(np.float32),
        "sagittal slice x=98 of the template -> 320x320 in [0, 1] as above; real part of "
        "ifft2(fft2(x) * mask) (shifted single-coil FFT)", MNI)
    add("real/prospective/001_mask.npy", mask,
        "utils.get_mask(type='gaussian1d', acc_factor=4, center_fraction=0.08, seed=1)")

    # Prospective 002: complex aliased image; fft2(image) * mask is exactly the measured k-space.
    x = to_square(load_dicom(GDCM_ABD), SIZE) * np.exp(1j * smooth_phase((SIZE, SIZE), seed=2))
    mask = gaussian1d_mask(SIZE, seed=2)
    add("real/prospective/002.npy", alias(x, mask).astype(np.complex64),
        "abdomen magnitude -> 320x320 in [0, 1] as above, times exp(i*phase) with "
        "smooth_phase(seed=2); complex ifft2(fft2(x) * mask), complex64", GDCM_ABD)
    add("real/prospective/002_mask.npy", mask,
        "utils.get_mask(type='gaussian1d', acc_factor=4, center_fraction=0.08, seed=2)")

    # Single-coil: complex image, |x| max 1, real magnitude with a smooth synthetic phase.
    x = to_square(load_mni(1, 120), SIZE) * np.exp(1j * smooth_phase((SIZE, SIZE), seed=3))
    add("single-coil/001.npy", x.astype(np.complex64),
        "coronal slice y=120 of the template -> 320x320 in [0, 1] as above, times exp(i*phase) "
        "with smooth_phase(seed=3); complex64", MNI)

    # Multi-coil: coil images S_c * x, with normalised simulated birdcage maps (RSS of coils = |x|).
    x = to_square(load_mni(2, 60), MC_SIZE) * np.exp(1j * smooth_phase((MC_SIZE, MC_SIZE), seed=4))
    coils = coil_maps(N_COILS, MC_SIZE) * x[None]  # [C, H, W]
    add("multi-coil/001.npy", coils.astype(np.complex64),
        f"axial slice z=60 of the template -> {MC_SIZE}x{MC_SIZE} in [0, 1] as above, times "
        f"exp(i*phase) with smooth_phase(seed=4), times {N_COILS} sigpy.mri.birdcage_maps(r=1.5) "
        "normalised to root-sum-of-squares 1; [C, H, W] complex64 coil images", MNI)
    return out


def notice(items: list[tuple[str, np.ndarray, str, list[Source]]]) -> str:
    """Text of samples/NOTICE.md."""
    versions = {d: metadata.version(d) for d in ("nilearn", "dipy", "pydicom", "pydicom-data", "sigpy")}
    lines = [
        "# samples/: sources and licences",
        "",
        "Built by `scripts/make_samples.py` (deterministic: fixed slices, fixed seeds). Inputs come only",
        "from packages installed from PyPI; the training volume (Colin27) and the evaluation-only files",
        "under `../shared/data` are not used. Package versions used:",
        "",
        *[f"- {d} {v}" for d, v in versions.items()],
        "",
        "Transforms shared by all images: crop to the object's bounding box (threshold 5% of max) plus",
        "a 6% margin, zero-pad to a square, cubic resize (anti-aliased when shrinking), clip at 0, divide",
        "by the maximum. `smooth_phase(seed)`: constant + linear terms (each uniform in +-0.6 pi), quadratic",
        "terms (+-0.4 pi) and one Gaussian bump (width 0.25, height 0.5-1 pi) on [-1, 1]^2, coefficients from",
        "`np.random.RandomState(seed)`. Masks: the project's `utils.get_mask` with an explicit seed,",
        "stored as [H, W] float32 (1 = sampled column). Aliased images use the single-coil shifted FFT",
        "(`utils.fft2`/`utils.ifft2`).",
        "",
        "## Files",
        "",
        "| file | shape, dtype | source (package: file) | made by |",
        "|---|---|---|---|",
    ]
    for path, arr, how, srcs in items:
        src = "; ".join(f"{s.package} {versions[s.package]}: `{s.file}`" for s in srcs) or "generated"
        lines.append(f"| `{path}` | {list(arr.shape)}, {arr.dtype} | {src} | {how} |")
    lines += ["", "## Sources and licences", ""]
    seen = []
    for _, _, _, srcs in items:
        seen += [s for s in srcs if s not in seen]
    for s in seen:
        lines += [f"- **{s.package}: `{s.file}`** ({s.note}). Licence: {s.licence}."]
    lines += ["", "## sha256", "", "```"]
    lines += [f"{hashlib.sha256(_npy_bytes(arr)).hexdigest()}  {path}" for path, arr, _, _ in items]
    lines += ["```", ""]
    return "\n".join(lines)


def _npy_bytes(arr: np.ndarray) -> bytes:
    """The exact bytes np.save writes for ``arr``."""
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Write every sample and NOTICE.md under --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "samples")
    args = parser.parse_args(argv)
    try:
        items = build()
    except (MissingSource, ModuleNotFoundError) as e:
        sys.stderr.write(f"make_samples: {e} ({PIP_HINT})\n" if isinstance(e, ModuleNotFoundError)
                         else f"make_samples: {e}\n")
        return 2
    for path, arr, _, _ in items:
        dst = args.out / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(_npy_bytes(arr))
        mag = np.abs(arr)
        print(f"{path:32s} {str(arr.shape):16s} {str(arr.dtype):9s} |x| min {mag.min():.3f} max {mag.max():.3f}")
    (args.out / "NOTICE.md").write_text(notice(items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
