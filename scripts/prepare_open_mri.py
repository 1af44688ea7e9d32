"""Collect the openly licensed MR training slices into one folder of ``.npy`` stacks (the embedded prior's data).

Sources (all installed by ``install.sh``; none of them is a volume the shipped ``samples/`` were cut from,
and nothing under ``../shared`` is read):

* Debian ``mricron-data`` (BSD-3): Colin27 ``ch2``, ``ch2bet`` (1 mm) and ``ch2better`` (0.5 mm, resampled
  to 0.75 mm), sliced along all three axes;
* PyPI ``dipy`` (BSD-3): ``S0_10slices`` (a b=0 diffusion volume, 2 mm), ``test_piesno`` (noisy diffusion
  slices), upsampled 2x in-plane;
* PyPI ``pydicom-data`` (MIT): ``emri_small`` (10 MR frames), upsampled 3x.

Excluded on purpose: nilearn's MNI152 T1, dipy's ``t1_coronal_slice`` and pydicom-data's ``MR2_*`` and
``MR-SIEMENS-DICOM-WithOverlays`` (the shipped samples come from them).

    python scripts/prepare_open_mri.py --out runs/open_mri_slices
"""
from __future__ import annotations

import argparse
import json
from importlib import metadata
from pathlib import Path

import numpy as np

MRICRON = Path("/usr/share/mricron/templates")
EXCLUDED = ("mni_icbm152_t1", "t1_coronal_slice", "MR2_", "MR-SIEMENS-DICOM-WithOverlays")


def package_file(dist: str, suffix: str) -> Path:
    """The installed file of distribution ``dist`` whose path ends with ``suffix``."""
    for f in metadata.files(dist) or []:
        if str(f).endswith(suffix):
            return Path(f.locate())
    raise FileNotFoundError(f"{suffix} not found in the installed package {dist}")


def zoom(vol: np.ndarray, factors: tuple[float, ...]) -> np.ndarray:
    """Cubic resampling by ``factors`` (anti-aliased when shrinking)."""
    from scipy import ndimage
    if any(f < 1 for f in factors):
        vol = ndimage.gaussian_filter(vol, [0.4 / f if f < 1 else 0 for f in factors])
    return np.clip(ndimage.zoom(vol, factors, order=3), 0, None).astype(np.float32)


def slices(vol: np.ndarray, axis: int, min_fg: float = 0.05) -> np.ndarray:
    """The slices along ``axis`` with at least ``min_fg`` of their pixels above 10% of the volume's max."""
    v = np.moveaxis(vol, axis, 0)
    fg = (v > 0.1 * v.max()).mean(axis=(1, 2))
    return np.ascontiguousarray(v[fg >= min_fg], dtype=np.float32)


def load_nifti(path: Path) -> np.ndarray:
    """The 3-D volume of a NIfTI file (the training loader's reader: a 4-D series gives its first volume)."""
    from score_mri.training.slice_sources import load_nifti as read
    return read(str(path))


def sources() -> list[tuple[str, np.ndarray, tuple[int, ...], str]]:
    """(name, volume [D0, D1, D2], slicing axes, licence) of every training source."""
    import pydicom
    out = []
    for name in ("ch2", "ch2bet"):
        out.append((name, load_nifti(MRICRON / f"{name}.nii.gz"), (0, 1, 2), "Colin27, Debian mricron-data, BSD-3"))
    out.append(("ch2better", zoom(load_nifti(MRICRON / "ch2better.nii.gz"), (2 / 3,) * 3), (0, 1, 2),
                "Colin27, Debian mricron-data, BSD-3"))
    s0 = load_nifti(package_file("dipy", "data/files/S0_10slices.nii.gz"))
    out.append(("dipy_S0_10slices", zoom(s0, (2, 2, 1)), (2,), "dipy, BSD-3"))
    piesno = load_nifti(package_file("dipy", "data/files/test_piesno.nii.gz"))
    out.append(("dipy_test_piesno", zoom(piesno, (2, 2, 1)), (2,), "dipy, BSD-3"))
    emri = pydicom.dcmread(str(package_file("pydicom-data", "data_store/data/emri_small.dcm"))).pixel_array
    out.append(("pydicom_emri_small", zoom(emri.astype(np.float32), (1, 3, 3)), (0,), "pydicom-data, MIT"))
    for name, *_ in out:
        assert not any(e in name for e in EXCLUDED)
    return out


# Colin27 gives ~1,500 slices of one head; the few other subjects are repeated so that about one batch in
# four holds one of them.
REPEAT = {"dipy_S0_10slices": 40, "dipy_test_piesno": 40, "pydicom_emri_small": 15}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/open_mri_slices", help="output folder (one .npy stack per source and axis)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = []
    for name, vol, axes, licence in sources():
        for a in axes:
            stack = slices(vol, a)
            stack /= max(float(stack.max()), 1e-12)
            stack = np.concatenate([stack] * REPEAT.get(name, 1))
            path = out / f"{name}_ax{a}.npy"
            np.save(path, stack)
            record.append({"file": path.name, "slices": int(stack.shape[0]), "shape": list(stack.shape[1:]),
                           "licence": licence})
            print(f"{path}: {stack.shape}")
    (out / "SOURCES.json").write_text(json.dumps(record, indent=1))
    print(f"{sum(r['slices'] for r in record)} slices in {out}")


if __name__ == "__main__":
    main()
