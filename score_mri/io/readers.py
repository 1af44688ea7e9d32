"""Readers and writers for the inputs of the inference scripts.

- ``.npy``: an image (``[H, W]`` real or complex, or ``[coils, H, W]`` complex).
- fastMRI ``.h5``: dataset ``kspace`` of shape ``[slices, H, W]`` (single-coil) or
  ``[slices, coils, H, W]`` (multi-coil), optional dataset ``mask`` (``[W]`` or ``[H, W]``).
- BART ``.cfl`` + ``.hdr``: complex64 in column-major (Fortran) order; the header lists
  the dimensions.  BART's dimension 0-2 are space (read, phase 1, phase 2) and 3 the coils.

Every reader raises :class:`UserError` with a one-line message on bad input. The CLIs read their
``--data`` through :func:`read_problem`, a suffix-to-reader registry (a new format is one ``@reader``).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from score_mri.errors import UserError
from score_mri.physics.fft import center_crop

BART_COIL_DIM = 3


def check_finite(a: np.ndarray, what: str) -> None:
    """Raise UserError if ``a`` contains NaN or Inf."""
    if not np.all(np.isfinite(a)):
        raise UserError(f"{what} contains NaN or Inf values")


def read_npy(path: str | Path, what: str = "input") -> np.ndarray:
    """Load a numeric ``.npy`` array (no pickles) or raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # a corrupt or non-npy file: report it in one line
        raise UserError(f"cannot read {what} {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise UserError(f"{what} {path} is not a numeric array (dtype {getattr(a, 'dtype', type(a))})")
    return a


# --------------------------------------------------------------------------- BART .cfl / .hdr

def _cfl_base(path: str | Path) -> Path:
    """Strip a ``.cfl`` / ``.hdr`` suffix: BART names a file pair by its base name."""
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".cfl", ".hdr") else path


def read_cfl(path: str | Path) -> np.ndarray:
    """Read a BART ``.cfl``/``.hdr`` pair into a complex64 array with BART's dimension order."""
    base = _cfl_base(path)
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for f in (hdr, cfl):
        if not f.is_file():
            raise UserError(f"BART file not found: {f}")
    try:
        lines = [ln.strip() for ln in hdr.read_text().splitlines()]
        dims = [int(v) for v in lines[lines.index("# Dimensions") + 1].split()]
    except (ValueError, IndexError, UnicodeDecodeError):
        raise UserError(f"cannot read BART header {hdr}: no '# Dimensions' line with integers") from None
    if not dims or any(d < 1 for d in dims):
        raise UserError(f"BART header {hdr} has invalid dimensions {dims}")
    count = int(np.prod(dims))
    data = np.fromfile(cfl, dtype=np.complex64)
    if data.size != count:
        raise UserError(f"BART file {cfl} holds {data.size} values, header {hdr} says {count} {dims}")
    return data.reshape(dims, order="F")


def write_cfl(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as a BART ``.cfl``/``.hdr`` pair (complex64, column-major)."""
    base = _cfl_base(path)
    array = np.asarray(array)
    dims = list(array.shape) or [1]
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".hdr").write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
    np.asarray(array, dtype=np.complex64).reshape(-1, order="F").tofile(base.with_suffix(".cfl"))


def cfl_to_kspace(ksp: np.ndarray) -> np.ndarray:
    """BART k-space (dims 0-2 space, 3 coils) -> ``[coils, H, W]``: two non-singleton spatial dims."""
    shape = tuple(ksp.shape) + (1,) * max(0, BART_COIL_DIM + 1 - ksp.ndim)
    extra = [d for d, n in enumerate(shape) if d > BART_COIL_DIM and n > 1]
    if extra:
        raise UserError(f"BART k-space has non-singleton dimensions {extra} (shape {shape}); "
                        f"expected space in dims 0-2 and coils in dim {BART_COIL_DIM} only")
    spatial = [d for d in range(BART_COIL_DIM) if shape[d] > 1]
    if len(spatial) != 2:
        raise UserError(f"BART k-space must have exactly two non-singleton spatial dims (0-2), got shape {shape}")
    ksp = ksp.reshape(shape[:BART_COIL_DIM + 1])           # [x, y, z, coils], trailing singletons dropped
    ksp = ksp.squeeze(axis=tuple(d for d in range(BART_COIL_DIM) if d not in spatial))  # [H, W, coils]
    return np.ascontiguousarray(np.moveaxis(ksp, -1, 0))   # [coils, H, W]


# --------------------------------------------------------------------------- fastMRI .h5

TARGET_KEYS = ("reconstruction_rss", "reconstruction_esc")   # fastMRI's stored reconstructions (the targets)
RAW_SUFFIXES = (".dat", ".mrd")                               # raw scanner files (MRD also as .h5, by content)
VOLUME_SUFFIXES = (".h5", ".hdf5") + RAW_SUFFIXES             # inputs with slices (--slice, folders, globs)


def _h5_recon_size(f) -> tuple[int, int] | None:
    """fastMRI's crop size: the stored reconstruction's shape, else the ISMRMRD header's reconSpace matrix."""
    for key in TARGET_KEYS:
        if key in f and f[key].ndim >= 2:
            return tuple(int(v) for v in f[key].shape[-2:])
    if "ismrmrd_header" in f:
        import xml.etree.ElementTree as ET
        try:
            xml = f["ismrmrd_header"][()]
            xml = xml.encode() if isinstance(xml, str) else bytes(xml if isinstance(xml, bytes) else
                                                                  np.asarray(xml).tobytes())
            root = ET.fromstring(xml.rstrip(b"\0"))
            ns = {"m": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
            q = "m:" if ns else ""
            size = root.find(f"{q}encoding/{q}reconSpace/{q}matrixSize", ns)
            return int(size.find(f"{q}x", ns).text), int(size.find(f"{q}y", ns).text)
        except (ET.ParseError, AttributeError, TypeError, ValueError):
            return None
    return None


def read_h5(path: str | Path, slice_index: int | None = None
            ) -> tuple[np.ndarray, np.ndarray | None, int, tuple[int, int] | None]:
    """One slice of a fastMRI file: (kspace ``[coils, H, W]``, stored mask or None, slice, crop size or None).

    The crop size is what fastMRI crops the image to: the shape of the stored reconstruction, else the
    header's reconSpace matrix size (x, y), else None.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"cannot read HDF5 file {path}: {e}".splitlines()[0]) from None
    with f:
        if "kspace" not in f:
            raise UserError(f"{path} has no 'kspace' dataset (keys: {sorted(f.keys())}): neither a fastMRI nor an "
                            "ISMRMRD/MRD file")
        kspace = f["kspace"]
        if kspace.ndim not in (3, 4):
            raise UserError(f"{path}: 'kspace' must be [slices, H, W] or [slices, coils, H, W], "
                            f"got shape {kspace.shape}")
        n = kspace.shape[0]
        if slice_index is None:
            slice_index = n // 2
        if not -n <= slice_index < n:
            raise UserError(f"--slice {slice_index} out of range: {path} has {n} slices")
        slice_index %= n
        ksp = np.asarray(kspace[slice_index])
        mask = np.asarray(f["mask"]) if "mask" in f else None
        recon_size = _h5_recon_size(f)
    if not np.iscomplexobj(ksp):
        raise UserError(f"{path}: 'kspace' must be complex, got dtype {ksp.dtype}")
    if ksp.ndim == 2:
        ksp = ksp[None]                                    # [1, H, W]
    return ksp.astype(np.complex64), mask, slice_index, recon_size


def parse_slices(text: str | None) -> int | slice | None:
    """``--slice``: None (the middle slice), an int, ``all`` or a range ``a:b`` (Python slice, end excluded)."""
    if text is None:
        return None
    text = str(text).strip()
    if text == "all":
        return slice(None)
    try:
        if ":" in text:
            a, b = text.split(":", 1)
            return slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
        return int(text)
    except ValueError:
        raise UserError(f"--slice must be an integer, 'all' or a range a:b, got {text!r}") from None


def slice_count(path: str | Path) -> int:
    """Number of slices of a volume input (fastMRI ``.h5``, raw ``.dat`` / ``.mrd`` / MRD ``.h5``) from its headers
    (read once per file version: a batch run asks for it more than once, and a twix header takes a slice read)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    return _slice_count(str(path), str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=256)
def _slice_count(path: str, resolved: str, mtime_ns: int, size: int) -> int:
    """:func:`slice_count` of one version (resolved path, modification time, size) of a file named ``path``."""
    import h5py
    path = Path(path)
    if path.suffix.lower() in RAW_SUFFIXES or _is_mrd(path):
        return raw_slice_count(path)
    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f or f["kspace"].ndim not in (3, 4):
                raise UserError(f"{path} has no 'kspace' dataset [slices, (coils,) H, W]")
            return int(f["kspace"].shape[0])
    except OSError as e:
        raise UserError(f"cannot read HDF5 file {path}: {e}".splitlines()[0]) from None


def slice_indices(spec: int | slice | None, n: int, path: Path) -> list[int]:
    """The slice indices of a file with ``n`` slices that ``spec`` selects (an empty selection is an error)."""
    if spec is None:
        return [n // 2]
    if isinstance(spec, int):
        if not -n <= spec < n:
            raise UserError(f"--slice {spec} out of range: {path} has {n} slices")
        return [spec % n]
    chosen = list(range(n))[spec]
    if not chosen:
        raise UserError(f"--slice {spec.start}:{spec.stop} selects no slice of {path} ({n} slices)")
    return chosen


def list_inputs(data: str) -> list[Path] | None:
    """``--data`` naming a folder or a glob: its volume files (``.h5``, ``.dat``, ``.mrd``; sorted); None for a
    single file or sample name."""
    import glob
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in VOLUME_SUFFIXES and p.is_file())
    elif any(c in data for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(data) if Path(p).suffix.lower() in VOLUME_SUFFIXES)
    else:
        return None
    if not files:
        raise UserError(f"--data {data}: no {', '.join(VOLUME_SUFFIXES)} files found")
    return files


# --------------------------------------------------------------------------- problems (what the CLIs read)

@dataclass
class Problem:
    """One reconstruction problem: an image [C, H, W] (full for retrospective, aliased for prospective)."""
    name: str
    source: Path
    task: str
    image: np.ndarray               # [C, H, W] complex64 (float32 for the real algorithm, retrospective)
    mask: np.ndarray | None         # [H, W] float32 0/1 for prospective, None for retrospective (simulated)
    scale: float = 1.0              # the input was divided by this (results are saved times this)
    kspace: np.ndarray | None = None  # measured k-space [C, H, W] (fastMRI convention, divided by scale), if any


@dataclass(frozen=True)
class InputKind:
    """What an algorithm reads: coil images or one image, real-valued (Algorithm 2) or complex."""
    samples: str                    # folder below <repo>/samples/ ('real', 'single-coil', 'multi-coil')
    coils: bool                     # the input is [coils, H, W]
    real_valued: bool               # Algorithm 2: retrospective labels are magnitude images


def ifft2c_np(k: np.ndarray) -> np.ndarray:
    """Centered orthonormal inverse FFT over the last two axes (fastMRI ``ifft2c``), NumPy."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)


def as_mask(mask: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    """A 0/1 mask broadcast to [H, W]; [W] (column mask) and singleton dims are accepted."""
    mask = np.asarray(mask)
    check_finite(mask, what)
    mask = np.squeeze(mask)
    if np.iscomplexobj(mask):
        mask = mask.real
    if mask.ndim == 1 and mask.shape[0] == shape[1]:
        mask = np.broadcast_to(mask[None, :], shape)
    if mask.shape != tuple(shape):
        raise UserError(f"{what} has shape {np.shape(mask)}, which does not match the image {tuple(shape)}")
    if not np.isin(mask, (0, 1)).all():
        raise UserError(f"{what} must hold only 0 and 1")
    if not mask.any():
        raise UserError(f"{what} samples nothing (all zeros)")
    return np.ascontiguousarray(mask, dtype=np.float32)


def resolve_data(data: str, kind: InputKind, task: str | None, repo: Path) -> Path:
    """A value with '/' or a suffix is a path (relative to CWD); else a sample under <repo>/samples/."""
    if "/" in data or os.sep in data or Path(data).suffix:
        path = Path(data)
    else:
        sub = [kind.samples] + ([task or "retrospective"] if kind.real_valued else [])
        path = repo.joinpath("samples", *sub, f"{data}.npy")
    if path.suffix.lower() == ".hdr":
        path = path.with_suffix(".cfl")
    if not path.is_file():
        raise UserError(f"input not found: {path}")
    return path


_READERS: dict[str, Callable] = {}


def reader(*suffixes: str) -> Callable:
    """Register a problem reader ``fn(path, kind, task, slice_index, image_size) -> Problem`` for suffixes."""

    def add(fn: Callable) -> Callable:
        for s in suffixes:
            _READERS[s] = fn
        return fn

    return add


def read_problem(path: Path, kind: InputKind, task: str | None, slice_index: int | None,
                 image_size: int, *, coils: int | None = None, average: int | None = None) -> Problem:
    """Read ``path`` with the reader registered for its suffix (.npy image, .h5 / .cfl / raw k-space).

    ``coils``: SVD-compress the coils to this many virtual coils (``--coils``); ``average``: one average of a
    raw file (``--average``; default the mean of all).
    """
    suffix = path.suffix.lower()
    if slice_index is not None and suffix not in VOLUME_SUFFIXES:
        raise UserError(f"--slice applies to .h5 and raw (.dat, .mrd) inputs only, not {path.name}")
    if suffix not in _READERS:
        raise UserError(f"unsupported input {path}: expected {', '.join(sorted(_READERS))}")
    if suffix in RAW_SUFFIXES or (suffix in (".h5", ".hdf5") and _is_mrd(path)):
        problem = read_raw_problem(path, kind, task, slice_index, coils, average)
    elif average is not None:
        raise UserError(f"--average applies to raw inputs only (.dat, .mrd, ISMRMRD/MRD .h5), not {path.name}")
    else:
        problem = _compress(_READERS[suffix](path, kind, task, slice_index, image_size), coils)
    if not np.abs(problem.image).max() > 0:
        raise UserError(f"{path}: the image is all zeros")
    return _finish(problem, kind)


def _image_from_npy(a: np.ndarray, path: Path, kind: InputKind) -> np.ndarray:
    """Bring an image array to [C, H, W] and check its rank for the algorithm."""
    ndim = 3 if kind.coils else 2
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        want = "a multi-coil image [coils, H, W]" if kind.coils else "one image [H, W]"
        raise UserError(f"{path}: expected {want}, got shape {a.shape}")
    return a if kind.coils else a[None]


@reader(".npy")
def _read_npy_problem(path: Path, kind: InputKind, task: str | None, slice_index, image_size) -> Problem:
    """An image (retrospective) or an aliased image plus ``<stem>_mask.npy`` (prospective)."""
    a = read_npy(path)
    check_finite(a, f"input {path}")
    image = _image_from_npy(a, path, kind)
    task = task or "retrospective"
    mask = None
    if task == "prospective":
        mask_path = path.with_name(f"{path.stem}_mask.npy")
        mask = as_mask(read_npy(mask_path, "mask"), image.shape[-2:], f"mask {mask_path}")
    scale = float(np.abs(image).max()) or 1.0  # magnitude to [0, 1] whatever the input's units (undone on saving)
    return Problem(name=path.stem, source=path, task=task, image=image / scale, mask=mask, scale=scale)


@reader(".h5", ".hdf5")
def _read_h5_problem(path: Path, kind: InputKind, task: str | None, slice_index, image_size) -> Problem:
    """fastMRI k-space, cropped to the stored reconstruction's size (else the model's) as fastMRI does."""
    ksp, stored_mask, s, crop = read_h5(path, slice_index)                        # [C, H, W]
    check_finite(ksp, f"k-space {path}")
    return problem_from_kspace(ksp, stored_mask, f"{path.stem}_s{s}", path, task, kind,
                               crop or (image_size, image_size))


@reader(".cfl", ".hdr")
def _read_cfl_problem(path: Path, kind: InputKind, task: str | None, slice_index, image_size) -> Problem:
    """BART k-space, the matrix as it is."""
    ksp = cfl_to_kspace(read_cfl(path))
    check_finite(ksp, f"k-space {path}")
    return problem_from_kspace(ksp, None, path.stem, path, task, kind, None)


# --------------------------------------------------------------------------- raw scanner data (twix, MRD)


def _is_mrd(path: Path) -> bool:
    """An ISMRMRD/MRD ``.h5`` (told apart from a fastMRI ``.h5`` by content)."""
    from score_mri.io.raw import is_mrd
    return is_mrd(path)


def _check_coils(coils: int | None, have: int, path: Path) -> None:
    """``--coils K`` must be in 1..(coils of the input)."""
    if coils is not None and not 1 <= coils <= have:
        raise UserError(f"--coils {coils}: {path.name} has {have} coil(s) (use 1..{have})")


def _compress(problem: Problem, coils: int | None) -> Problem:
    """SVD coil compression of a coil-image problem (the same virtual coils as from k-space: Parseval)."""
    if coils is None:
        return problem
    _check_coils(coils, problem.image.shape[0], problem.source)
    if coils == problem.image.shape[0]:
        return problem
    from score_mri.io.raw import coil_compress
    measured = getattr(problem, "kspace", None)
    if measured is not None:      # measured k-space kept: compress it and take the image from it (one basis)
        problem.kspace = coil_compress(measured, coils)
        problem.image = ifft2c_np(problem.kspace).astype(np.complex64)
    else:
        problem.image = coil_compress(problem.image, coils)
    peak = float(np.abs(problem.image).max()) or 1.0                  # keep the magnitude in [0, 1]
    problem.scale *= peak
    problem.image /= peak
    if measured is not None:
        problem.kspace /= np.float32(peak)
    return problem


@reader(*RAW_SUFFIXES)
def _read_raw_registered(path: Path, kind: InputKind, task: str | None, slice_index, image_size) -> Problem:
    """Siemens twix ``.dat`` or ISMRMRD/MRD (``.mrd``, or ``.h5`` by content): one slice, the matrix as it is."""
    return read_raw_problem(path, kind, task, slice_index, None)


def read_raw_problem(path: Path, kind: InputKind, task: str | None, slice_index: int | None,
                     coils: int | None = None, average: int | None = None) -> Problem:
    """A raw file's slice as a problem: k-space [C, readout, phase] (1-D masks act on the phase encodes).

    Readout oversampling is removed and the coils pre-whitened when the file has noise scans; averages are
    averaged (or ``average`` alone is taken); ``slice_index`` None is the middle slice. A fully sampled file is
    retrospective, one with missing phase-encoding lines prospective.
    ``coils`` compresses the k-space to that many virtual coils (SVD) before anything else.
    """
    from score_mri.io.raw import RawDataError, read_raw
    if slice_index is None or slice_index < 0:       # default: the middle slice, as for fastMRI files
        slice_index = slice_indices(slice_index, slice_count(path), path)[0]
    try:
        raw = read_raw(path, slice=slice_index, average="mean" if average is None else int(average))
    except RawDataError as e:
        raise UserError(str(e).splitlines()[0]) from None
    except OSError as e:
        raise UserError(f"cannot read raw file {path}: {e}".splitlines()[0]) from None
    ksp = np.ascontiguousarray(np.swapaxes(raw.kspace, -1, -2))        # [C, kx (readout), ky (phase)]
    check_finite(ksp, f"k-space {path}")
    _check_coils(coils, ksp.shape[0], path)
    if coils is not None and coils < ksp.shape[0]:
        from score_mri.io.raw import coil_compress
        ksp = coil_compress(ksp, coils)
    stored = None if raw.mask.all() else raw.mask.astype(np.float32)    # [ky] -> a column mask
    return problem_from_kspace(ksp, stored, f"{path.stem}_s{raw.header.get('slice', 0)}", path, task, kind, None)


def raw_slice_count(path: Path) -> int:
    """Number of slices of a raw file, from its headers (no k-space gridded)."""
    from score_mri.io.raw import RawDataError, count_slices
    try:
        return count_slices(path)
    except RawDataError as e:
        raise UserError(str(e).splitlines()[0]) from None
    except OSError as e:
        raise UserError(f"cannot read raw file {path}: {e}".splitlines()[0]) from None


def _mask_from_zeros(ksp: np.ndarray, path: Path) -> np.ndarray | None:
    """Mask [H, W] of the nonzero k-space points, or None when fully sampled.

    Fully sampled means: every point inside the bounding box of the nonzero points is nonzero (99 %), so
    zero-padded edges (fastMRI raw data) and the odd exact zero do not turn a full file into a prospective one.
    """
    sampled = (np.abs(ksp) > 0).any(axis=0)                              # [H, W]
    if not sampled.any():
        raise UserError(f"k-space in {path} is all zeros")
    rows, cols = np.flatnonzero(sampled.any(axis=1)), np.flatnonzero(sampled.any(axis=0))
    box = sampled[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return None if box.mean() >= 0.99 else sampled.astype(np.float32)


def problem_from_kspace(ksp: np.ndarray, stored_mask: np.ndarray | None, name: str, path: Path,
                        task: str | None, kind: InputKind, crop: tuple[int, int] | None) -> Problem:
    """k-space [C, H, W] -> image, centre-cropped in image space to ``crop`` as fastMRI does.

    Prospective data with a column mask is cropped along the readout (rows) only, which keeps the
    measured columns exact; other prospective data is not cropped.
    """
    shape, kspace = ksp.shape[-2:], None
    mask = as_mask(stored_mask, shape, f"stored mask of {path}") if stored_mask is not None \
        else _mask_from_zeros(ksp, path)
    task = task or ("prospective" if mask is not None else "retrospective")
    if task == "retrospective":
        image = ifft2c_np(ksp)                                          # [C, H, W]
        image = image if crop is None else center_crop(image, crop)     # [C, h, w]
        mask = None
    else:
        if mask is None:
            raise UserError(f"--task prospective: {path} is fully sampled and stores no mask")
        kspace = (ksp * mask).astype(np.complex64)                      # the measured data itself
        image = ifft2c_np(kspace)                                       # aliased [C, H, W]
        if crop is not None and (mask == mask[:1]).all():  # column mask: a readout (row) crop is exact
            image = center_crop(image, (crop[0], image.shape[-1]))
            mask = np.ascontiguousarray(mask[:image.shape[-2]])
            kspace = None                                               # a new grid: simulated from the image
    if not kind.coils and image.shape[0] > 1:
        if not (kind.real_valued and task == "retrospective"):
            raise UserError(f"{path} holds {image.shape[0]} coils: use inference_multi-coil_SSOS.py or "
                            f"inference_multi-coil_hybrid.py")
        image = np.sqrt(np.sum(np.abs(image) ** 2, axis=0, keepdims=True))  # RSS magnitude [1, h, w]
    scale = float(np.abs(image).max()) or 1.0
    return Problem(name=name, source=path, task=task, image=image / scale, mask=mask, scale=scale,
                   kspace=None if kspace is None else kspace / np.float32(scale))


def _finish(problem: Problem, kind: InputKind) -> Problem:
    """Final dtype: a real image for the real algorithm's retrospective label, complex64 otherwise."""
    if kind.real_valued and problem.task == "retrospective":
        problem.image = np.abs(problem.image).astype(np.float32) if np.iscomplexobj(problem.image) \
            else problem.image.astype(np.float32)
    else:
        problem.image = problem.image.astype(np.complex64)
    return problem
