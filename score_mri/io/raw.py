"""Raw scanner data: Siemens twix (``.dat``) and ISMRMRD/MRD (``.h5``) to one Cartesian 2-D k-space slice.

k-space is ``[C, ky, kx]`` complex64 (readout last) with its centre at ``[ky // 2, kx // 2]`` (centred FFT);
``mask`` is ``[ky]`` bool (acquired lines; the others are zero). Readout oversampling is removed by keeping
the central part of the readout in image space (orthonormal FFTs: white-noise variance per sample kept).
Pre-whitening maps the data to ``L^-1 d`` with ``L L^H`` the noise-scan covariance scaled to the image
bandwidth (ratio of dwell times, when both are known): coil noise becomes white, unit variance, uncorrelated.
:func:`count_slices` reads the headers alone (no samples) and derives the slice count as ``read_raw`` does.
Only numpy, h5py, ismrmrd, twixtools, the standard library and ``score_mri.errors`` are imported (torch
only if passed in).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from score_mri.errors import UserError

__all__ = ["RawDataError", "RawKSpace", "read_raw", "read_twix", "read_mrd", "count_slices", "is_mrd", "is_twix",
           "whitening_matrix", "coil_compress", "check_maps"]


class RawDataError(UserError):
    """A raw data file that cannot be turned into a Cartesian 2-D k-space slice (one-line message, exit 2)."""


@dataclass
class RawKSpace:
    """One 2-D slice of measured k-space with its sampling mask and metadata."""

    kspace: np.ndarray            # [C, ky, kx] complex64, kx = readout
    mask: np.ndarray              # [ky] bool, acquired phase-encoding lines
    noise_whitened: bool          # True when the coils were pre-whitened with the file's noise scans
    header: dict[str, Any] = field(default_factory=dict)  # matrix size, FOV (mm), counts, dwell times
    source: str = ""              # path of the file read
    noise_cov: np.ndarray | None = None  # [C, C] noise covariance of the noise scans (before whitening)

    @property
    def num_coils(self) -> int:
        """Number of receive coils."""
        return int(self.kspace.shape[0])


# --------------------------------------------------------------------------------------------- shared steps

def _noise_cov(noise: np.ndarray) -> np.ndarray:
    """Sample covariance [C, C] of noise samples [C, ...] (mean removed)."""
    noise = np.asarray(noise)
    x = noise.reshape(noise.shape[0], -1).astype(np.complex128)
    if x.shape[1] < 2:
        raise RawDataError("noise scan has fewer than 2 samples per coil")
    x = x - x.mean(axis=1, keepdims=True)
    return x @ x.conj().T / (x.shape[1] - 1)


def _whitening(cov: np.ndarray, scale: float) -> np.ndarray:
    """``L^-1`` with ``L L^H = scale * cov`` (Cholesky)."""
    try:
        return np.linalg.inv(np.linalg.cholesky(cov * scale))
    except np.linalg.LinAlgError:
        raise RawDataError("noise covariance is not positive definite (dead or duplicated coil?)") from None


def whitening_matrix(noise: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(W, cov)`` for noise samples ``[C, ...]``: ``W = L^-1`` with ``L L^H = scale * cov``."""
    cov = _noise_cov(noise)
    return _whitening(cov, scale), cov


def _noise_setup(noise: list[np.ndarray], dwell_noise: float | None, dwell_img: float | None,
                 prewhiten: bool) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """``(W or None, cov or None, scale)`` from noise readouts; variance per sample grows as 1 / dwell."""
    if not noise:
        return None, None, 1.0
    scale = dwell_noise / dwell_img if dwell_noise and dwell_img else 1.0
    cov = _noise_cov(np.concatenate(noise, axis=1))
    return (_whitening(cov, scale) if prewhiten else None), cov, scale


def _check_index(name: str, value: int, count: int) -> None:
    """Raise unless ``0 <= value < count``."""
    if not 0 <= value < count:
        raise RawDataError(f"{name} {value} out of range (file has {count}: 0..{count - 1})")


def _apply_coils(matrix: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Mix the coil axis (axis 0) of ``data`` with ``matrix`` [C', C]."""
    return np.tensordot(matrix, data, axes=(1, 0))


def _place_readout(data: np.ndarray, center: int, nx: int) -> np.ndarray:
    """Put readout samples [C, ns] in a zero row of length ``nx`` with sample ``center`` at ``nx // 2``."""
    ns = data.shape[-1]
    start = nx // 2 - int(center)
    if start < 0 or start + ns > nx:
        raise RawDataError(f"readout of {ns} samples with centre sample {center} does not fit a {nx}-sample grid")
    out = np.zeros((data.shape[0], nx), dtype=np.complex64)
    out[:, start:start + ns] = data
    return out


def _crop_readout(kspace: np.ndarray, keep: int) -> np.ndarray:
    """Remove readout oversampling: keep the central ``keep`` image-space samples of the last axis."""
    nx = kspace.shape[-1]
    if keep >= nx:
        return kspace
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=-1), axis=-1, norm="ortho"), axes=-1)
    start = nx // 2 - keep // 2
    img = img[..., start:start + keep]
    out = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(img, axes=-1), axis=-1, norm="ortho"), axes=-1)
    return out.astype(np.complex64)


def _grid(lines: list[tuple[int, int, np.ndarray]], ny: int, average: str | int, n_ave: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Grid ``(ky, average index, readout [C, nx])`` triples; ``average`` = 'mean' or one index."""
    if average != "mean":
        if not isinstance(average, (int, np.integer)) or not 0 <= average < n_ave:
            raise RawDataError(f"average {average!r} out of range (file has {n_ave}; use 'mean' or 0..{n_ave - 1})")
        lines = [ln for ln in lines if ln[1] == average]
        if not lines:
            raise RawDataError(f"average {average} has no readouts for the selected slice/contrast/repetition")
    c, nx = lines[0][2].shape
    acc = np.zeros((c, ny, nx), dtype=np.complex128)
    count = np.zeros(ny, dtype=np.int64)
    for ky, _, row in lines:
        if not 0 <= ky < ny:
            raise RawDataError(f"phase-encoding line {ky} outside the {ny}-line encoded matrix")
        if row.shape[0] != c:
            raise RawDataError(f"coil count changes between readouts ({row.shape[0]} vs {c})")
        acc[:, ky] += row
        count[ky] += 1
    mask = count > 0
    acc[:, mask] /= count[mask][:, None]
    return acc.astype(np.complex64), mask


def _select_slice(slice_: int | None, n_slices: int) -> int:
    """Validate a slice index (None picks the only slice of a single-slice file)."""
    if slice_ is None and n_slices != 1:
        raise RawDataError(f"file has {n_slices} slices; pass slice=0..{n_slices - 1}")
    _check_index("slice", int(slice_ or 0), n_slices)
    return int(slice_ or 0)


def _counts(counters: dict[str, Any]) -> dict[str, int]:
    """Number of values of each loop counter (largest index + 1) over the image readouts."""
    return {name: int(np.max(values)) + 1 for name, values in counters.items()}


def _finish(lines: list[tuple[int, int, np.ndarray]], ny: int, nx_keep: int, average: str | int, n_ave: int,
            whiten: np.ndarray | None, noise_cov: np.ndarray | None, header: dict, path: str | Path) -> RawKSpace:
    """Grid the selected readouts, pre-whiten, remove oversampling and wrap the result."""
    if not lines:
        raise RawDataError(f"{path}: no image readouts for the selected slice/contrast/repetition")
    kspace, mask = _grid(lines, ny, average, n_ave)
    if whiten is not None:
        if whiten.shape[1] != kspace.shape[0]:
            raise RawDataError(f"noise scans have {whiten.shape[1]} coils, image readouts {kspace.shape[0]}")
        kspace = _apply_coils(whiten, kspace).astype(np.complex64)
    kspace = _crop_readout(kspace, nx_keep)
    header["matrix_acquired"] = [int(kspace.shape[1]), int(kspace.shape[2])]
    header["num_coils"] = int(kspace.shape[0])
    return RawKSpace(kspace=kspace, mask=mask, noise_whitened=whiten is not None, header=header,
                     source=str(path), noise_cov=noise_cov)


# ------------------------------------------------------------------------------------------------- dispatch

def is_mrd(path: str | Path) -> bool:
    """True when ``path`` is an ISMRMRD/MRD HDF5 file (``/dataset/data`` and ``/dataset/xml``), by content."""
    import h5py  # here, not at module level: an .npy input never pays for the import
    try:
        with h5py.File(path, "r") as f:
            grp = f.get("dataset")
            return isinstance(grp, h5py.Group) and "data" in grp and "xml" in grp
    except (OSError, ValueError):
        return False


def is_twix(path: str | Path) -> bool:
    """True when ``path`` starts like a Siemens twix file (VD/VE multi-raid or VB single measurement)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    if len(head) < 16:
        return False
    first, second = np.frombuffer(head[:8], dtype="<u4")
    if first == 0 and 0 < second <= 64:   # VD/VE: zero, number of measurements, then raid entries
        meas_id, file_id = np.frombuffer(head[8:16], dtype="<u4")
        return bool(meas_id > 0 or file_id > 0)
    return bool(first > 0 and head[8:14] == b"Config")  # VB: header length, buffer count, "Config"


def read_raw(path: str | Path, **kwargs: Any) -> RawKSpace:
    """Read an MRD ``.h5`` or a Siemens twix ``.dat`` (told apart by content) into a :class:`RawKSpace`."""
    if is_mrd(path):
        return read_mrd(path, **kwargs)
    if is_twix(path):
        return read_twix(path, **kwargs)
    raise RawDataError(f"{path}: neither an ISMRMRD/MRD .h5 nor a Siemens twix .dat file")


def count_slices(path: str | Path) -> int:
    """Number of 2-D slices of a raw file from its headers alone (no k-space read): ``read_raw``'s ``num_slices``."""
    if is_mrd(path):
        return _mrd_scan(path).counts["slices"]
    if is_twix(path):
        _, _, counts = _twix_scan(path)
        return counts["slices"]
    raise RawDataError(f"{path}: neither an ISMRMRD/MRD .h5 nor a Siemens twix .dat file")


# ---------------------------------------------------------------------------------------------------- twix

def _yaps(hdr: dict, *keys: str | int, default: Any = None) -> Any:
    """Nested lookup in a twix header dict; ``default`` when a key is missing or empty."""
    node: Any = hdr
    for key in keys:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return default
    return default if node in ("", None) else node


def _twix_dwell_ns(hdr: dict) -> float | None:
    """First readout dwell time (ns) of a twix measurement header, or None."""
    dwell = float(_yaps(hdr, "MeasYaps", "sRXSPEC", "alDwellTime", 0, default=0) or 0)
    return dwell if dwell > 0 else None


_TWIX_COUNTERS = (("slices", "cSlc"), ("averages", "cAve"), ("repetitions", "cRep"), ("contrasts", "cEco"))


def _twix_measurements(path: str | Path) -> list[dict]:
    """twixtools' measurements of a twix file: protocol and readout headers (samples are read on use)."""
    import twixtools

    if not is_twix(path):
        raise RawDataError(f"{path}: not a Siemens twix .dat file")
    try:
        measurements = twixtools.read_twix(str(path), parse_pmu=False, parse_geometry=False, verbose=False)
    except Exception as exc:  # twixtools raises assorted errors on truncated files
        raise RawDataError(f"{path}: twixtools could not parse the file ({type(exc).__name__}: {exc})") from None
    if not measurements:
        raise RawDataError(f"{path}: no measurements in the twix file")
    return measurements


def _twix_scan(path: str | Path) -> tuple[list[dict], list, dict[str, int]]:
    """(measurements, image scans of the last one, their loop counts); unsupported acquisitions refused."""
    measurements = _twix_measurements(path)
    meas = measurements[-1]
    hdr = meas["hdr"]
    image = [m for m in meas["mdb"] if m.is_image_scan() and not m.is_flag_set("RETRO_DUMMYSCAN")]
    if not image:
        raise RawDataError(f"{path}: no image scans in the last measurement")
    trajectory = _yaps(hdr, "MeasYaps", "sKSpace", "ucTrajectory", default=1)
    if any(m.is_flag_set("REFLECT") for m in image) or any(m.is_flag_set("PHASCOR") for m in meas["mdb"]):
        raise RawDataError(f"{path}: EPI readouts are not supported (reflected lines / phase-correction scans)")
    if int(trajectory) != 1:
        raise RawDataError(f"{path}: non-Cartesian trajectories are not supported (ucTrajectory={trajectory})")
    if int(_yaps(hdr, "MeasYaps", "sKSpace", "ucDimension", default=2)) == 4 or any(m.cPar for m in image):
        raise RawDataError(f"{path}: 3-D acquisitions are not supported")
    return measurements, image, _counts({name: [getattr(m, c) for m in image] for name, c in _TWIX_COUNTERS})


def _twix_geometry(hdr: dict, slc: int) -> tuple[int, int, list]:
    """(base resolution, phase-encoding lines, [readout FOV, phase FOV, thickness] in mm of slice ``slc``)
    from a twix header."""
    base = int(_yaps(hdr, "MeasYaps", "sKSpace", "lBaseResolution", default=0) or 0)
    lines = int(_yaps(hdr, "MeasYaps", "sKSpace", "lPhaseEncodingLines", default=0) or 0)
    slice_info = _yaps(hdr, "MeasYaps", "sSliceArray", "asSlice", slc, default={}) or {}
    return base, lines, [slice_info.get("dReadoutFOV"), slice_info.get("dPhaseFOV"), slice_info.get("dThickness")]


def twix_spacing(path: str | Path) -> tuple[float, float, float] | None:
    """(readout, phase, slice) pixel spacing in mm of a twix file's first slice, from its header alone (the
    readout after oversampling removal); None when the header lacks the field of view or the matrix."""
    base, lines, fov = _twix_geometry(_twix_measurements(path)[-1]["hdr"], 0)
    if fov[0] and fov[1] and base and lines:
        return float(fov[0]) / base, float(fov[1]) / lines, float(fov[2] or 1.0)
    return None


def read_twix(path: str | Path, *, slice: int | None = None, average: str | int = "mean",
              repetition: int = 0, contrast: int = 0, remove_oversampling: bool = True,
              prewhiten: bool = True) -> RawKSpace:
    """Read one 2-D Cartesian slice of a Siemens twix ``.dat`` file (phase 0, set 0)."""
    measurements, image, counts = _twix_scan(path)
    meas = measurements[-1]
    hdr = meas["hdr"]
    n_slices, n_ave, n_rep, n_eco = (counts[name] for name, _ in _TWIX_COUNTERS)
    slc = _select_slice(slice, n_slices)
    _check_index("repetition", repetition, n_rep)
    _check_index("contrast", contrast, n_eco)
    chosen = [m for m in image if m.cSlc == slc and m.cRep == repetition and m.cEco == contrast
              and m.cPhs == 0 and m.cSet == 0]

    base, n_lines, fov_mm = _twix_geometry(hdr, slc)
    ncol = max(int(m.mdh.SamplesInScan) for m in chosen) if chosen else 0
    fourier_cols = int(float(_yaps(hdr, "Meas", "iNoOfFourierColumns", default=0) or 0))
    oversampled = base > 0 and (ncol == 2 * base or fourier_cols == 2 * base)
    nx = 2 * base if oversampled else max(ncol, base)
    ny = max(n_lines, max((m.cLin for m in chosen), default=-1) + 1)
    center_line = int(chosen[0].mdh.CenterLin) if chosen else ny // 2
    shift = ny // 2 - center_line

    noise_meas = [mm for mm in measurements if any(m.is_flag_set("NOISEADJSCAN") for m in mm["mdb"])]
    noise = [np.asarray(m.data) for mm in noise_meas for m in mm["mdb"] if m.is_flag_set("NOISEADJSCAN")]
    dwell_img = _twix_dwell_ns(hdr)
    dwell_noise = _twix_dwell_ns(noise_meas[0]["hdr"]) if noise_meas else None
    whiten, cov, scale = _noise_setup(noise, dwell_noise, dwell_img, prewhiten)

    lines = [(m.cLin + shift, m.cAve, _place_readout(np.asarray(m.data), m.mdh.CenterCol, nx)) for m in chosen]
    header = {
        "format": "twix", "base_resolution": base, "phase_encoding_lines": n_lines, "center_line": center_line,
        "readout_oversampling": 2 if oversampled else 1,
        "oversampling_removed": bool(oversampled and remove_oversampling),
        "fov_mm": fov_mm,
        "num_slices": n_slices, "num_averages": n_ave, "num_repetitions": n_rep, "num_contrasts": n_eco,
        "slice": slc, "average": average, "repetition": repetition, "contrast": contrast,
        "noise_scans": len(noise), "dwell_ns": dwell_img, "noise_dwell_ns": dwell_noise, "noise_scale": scale,
        "protocol": _yaps(hdr, "MeasYaps", "tProtocolName", default=None),
    }
    keep = nx // 2 if (oversampled and remove_oversampling) else nx
    return _finish(lines, ny, keep, average, n_ave, whiten, cov, header, path)


# ----------------------------------------------------------------------------------------------------- MRD

def xml_find(node: ET.Element | None, path: str) -> ET.Element | None:
    """Namespace-agnostic ``find`` of a '/'-separated child path."""
    for name in path.split("/"):
        if node is None:
            return None
        node = next((ch for ch in node if ch.tag.rsplit("}", 1)[-1] == name), None)
    return node


def _xml_num(node: ET.Element | None, path: str, default: float | None = None) -> float | None:
    """Number at a child path of ``node`` or ``default``."""
    el = xml_find(node, path)
    try:
        return float(el.text) if el is not None and el.text is not None else default
    except ValueError:
        return default


_MRD_COUNTERS = (("slices", "slice"), ("averages", "average"), ("repetitions", "repetition"),
                 ("contrasts", "contrast"))
_MRD_SKIPPED = ("NOISE_MEASUREMENT", "PARALLEL_CALIBRATION", "NAVIGATION_DATA", "PHASECORR_DATA", "HPFEEDBACK_DATA",
                "DUMMYSCAN_DATA", "RTFEEDBACK_DATA", "SURFACECOILCORRECTIONSCAN_DATA")


def _mrd_flag(heads: np.ndarray, name: str) -> np.ndarray:
    """[n] bool: ISMRMRD flag ``ACQ_IS_<name>`` set in each acquisition header."""
    import ismrmrd
    return (heads["flags"] & np.uint64(1 << (getattr(ismrmrd, "ACQ_IS_" + name) - 1))) != 0


def _mrd_headers(path: str | Path, dataset: str) -> tuple[str, np.ndarray]:
    """(XML header, acquisition headers as a structured array) of an MRD file; the samples are not read."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            xml = f[f"{dataset}/xml"][0]
            heads = f[f"{dataset}/data"].fields("head")[:]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise RawDataError(f"{path}: unreadable MRD dataset {dataset!r} ({type(exc).__name__}: {exc})") from None
    return (xml.decode() if isinstance(xml, bytes) else str(xml)), np.atleast_1d(heads)


def _mrd_encoding(xml: str, path: str | Path) -> tuple[ET.Element, ET.Element]:
    """(XML root, first <encoding>) of a 2-D Cartesian MRD header; other acquisitions refused."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise RawDataError(f"{path}: unreadable MRD XML header ({exc})") from None
    enc = xml_find(root, "encoding")
    if enc is None:
        raise RawDataError(f"{path}: MRD XML header has no <encoding>")
    traj_el = xml_find(enc, "trajectory")
    trajectory = (traj_el.text or "").strip().lower() if traj_el is not None else "cartesian"
    if trajectory == "epi":
        raise RawDataError(f"{path}: EPI readouts are not supported")
    if trajectory != "cartesian":
        raise RawDataError(f"{path}: non-Cartesian trajectories are not supported (trajectory={trajectory})")
    nz = int(_xml_num(enc, "encodedSpace/matrixSize/z", 1))
    if nz > 1 or (_xml_num(enc, "encodingLimits/kspace_encoding_step_2/maximum", 0) or 0) > 0:
        raise RawDataError(f"{path}: 3-D acquisitions are not supported (encoded z = {nz})")
    return root, enc


class _MrdScan(NamedTuple):
    """What an MRD file's headers say (no samples read)."""

    root: ET.Element              # XML header
    enc: ET.Element               # its first <encoding>
    heads: np.ndarray             # [n] acquisition headers (structured, ismrmrd's field names)
    counts: dict[str, int]        # slices, averages, repetitions, contrasts
    image: np.ndarray             # [n] bool, image readouts of encoding space 0


def _mrd_scan(path: str | Path, dataset: str = "dataset") -> _MrdScan:
    """The headers of an MRD file and its loop counts; unsupported acquisitions refused."""
    if not is_mrd(path):
        raise RawDataError(f"{path}: not an ISMRMRD/MRD file (no /dataset/data and /dataset/xml)")
    xml, heads = _mrd_headers(path, dataset)
    root, enc = _mrd_encoding(xml, path)
    image = ~np.any([_mrd_flag(heads, name) for name in _MRD_SKIPPED], axis=0) & (heads["encoding_space_ref"] == 0)
    if not image.any():
        raise RawDataError(f"{path}: no image scans (only noise/calibration/navigator acquisitions)")
    if _mrd_flag(heads[image], "REVERSE").any():
        raise RawDataError(f"{path}: EPI readouts are not supported (reversed readouts)")
    counts = _counts({name: heads["idx"][field][image] for name, field in _MRD_COUNTERS})
    counts["slices"] = max(counts["slices"], int(_xml_num(enc, "encodingLimits/slice/maximum", 0) or 0) + 1)
    return _MrdScan(root, enc, heads, counts, image)


def _mrd_rows(heads: np.ndarray, image: np.ndarray, slc: int, repetition: int, contrast: int) -> np.ndarray:
    """Indices of the image readouts of one slice, repetition and contrast (phase 0, set 0)."""
    idx = heads["idx"]
    keep = image & (idx["slice"] == slc) & (idx["repetition"] == repetition) & (idx["contrast"] == contrast)
    return np.flatnonzero(keep & (idx["phase"] == 0) & (idx["set"] == 0))


def read_mrd(path: str | Path, *, slice: int | None = 0, average: str | int = "mean", repetition: int = 0,
             contrast: int = 0, remove_oversampling: bool = True, prewhiten: bool = True,
             dataset: str = "dataset") -> RawKSpace:
    """Read one 2-D Cartesian slice of an ISMRMRD/MRD ``.h5`` file (encoding space 0, phase 0, set 0)."""
    import ismrmrd

    root, enc, heads, counts, image = _mrd_scan(path, dataset)
    n_slices, n_ave, n_rep, n_con = (counts[name] for name, _ in _MRD_COUNTERS)
    slc = _select_slice(slice, n_slices)
    _check_index("repetition", repetition, n_rep)
    _check_index("contrast", contrast, n_con)
    with ismrmrd.Dataset(str(path), dataset_name=dataset, mode="r") as dset:   # only the readouts used
        chosen = [dset.read_acquisition(int(i)) for i in _mrd_rows(heads, image, slc, repetition, contrast)]
        noise = [dset.read_acquisition(int(i)) for i in np.flatnonzero(_mrd_flag(heads, "NOISE_MEASUREMENT"))]
    nx = int(_xml_num(enc, "encodedSpace/matrixSize/x", 0))
    ny = int(_xml_num(enc, "encodedSpace/matrixSize/y", 0))
    nz = int(_xml_num(enc, "encodedSpace/matrixSize/z", 1))
    center_line = _xml_num(enc, "encodingLimits/kspace_encoding_step_1/center")
    if nx <= 0 or ny <= 0:
        nx = max((a.number_of_samples for a in chosen), default=0)
        ny = max((a.idx.kspace_encode_step_1 for a in chosen), default=-1) + 1
    counters = [a.idx.kspace_encode_step_1 for a in chosen] or [0]
    shift = ny // 2 - int(center_line) if center_line is not None else 0
    if (min(counters) + shift < 0 or max(counters) + shift >= ny) and max(counters) < ny:
        shift = 0  # centre 0 or wrong in a fully encoded matrix: the counters index the grid directly

    dwell_img = float(chosen[0].sample_time_us) if chosen else 0.0
    dwell_noise = float(noise[0].sample_time_us) if noise else 0.0
    whiten, cov, scale = _noise_setup([np.asarray(a.data) for a in noise], dwell_noise, dwell_img, prewhiten)

    fov_enc = _xml_num(enc, "encodedSpace/fieldOfView_mm/x")
    fov_rec = _xml_num(enc, "reconSpace/fieldOfView_mm/x")
    rec_x = int(_xml_num(enc, "reconSpace/matrixSize/x", nx) or nx)
    keep = int(round(nx * fov_rec / fov_enc)) if fov_enc and fov_rec and fov_rec < fov_enc else min(rec_x, nx)
    header = {
        "format": "mrd", "encoded_matrix": [nx, ny, nz],
        "recon_matrix": [rec_x, int(_xml_num(enc, "reconSpace/matrixSize/y", ny) or ny)],
        "fov_mm": [_xml_num(enc, f"encodedSpace/fieldOfView_mm/{a}") for a in "xyz"],
        "recon_fov_mm": [_xml_num(enc, f"reconSpace/fieldOfView_mm/{a}") for a in "xyz"],
        "readout_oversampling": nx / keep if keep else 1.0,
        "oversampling_removed": bool(remove_oversampling and keep < nx), "center_line": ny // 2 - shift,
        "num_slices": n_slices, "num_averages": n_ave, "num_repetitions": n_rep, "num_contrasts": n_con,
        "slice": slc, "average": average, "repetition": repetition, "contrast": contrast,
        "noise_scans": len(noise), "dwell_us": dwell_img, "noise_dwell_us": dwell_noise or None, "noise_scale": scale,
        "relative_receiver_noise_bandwidth": _xml_num(root, "acquisitionSystemInformation/"
                                                      "relativeReceiverNoiseBandwidth"),
    }
    lines = [(a.idx.kspace_encode_step_1 + shift, a.idx.average,
              _place_readout(np.asarray(a.data), a.center_sample, nx)) for a in chosen]
    return _finish(lines, ny, keep if remove_oversampling else nx, average, n_ave, whiten, cov, header, path)


# -------------------------------------------------------------------------------------------- coil helpers

def coil_compress(kspace: Any, k: int, *, calib: int | None = None) -> Any:
    """Compress ``[C, ...]`` k-space to its ``k`` strongest virtual coils (SVD coil compression).

    The coil covariance ``A A^H`` is formed from all samples, or with ``calib=n`` only from the central
    ``n`` x ``n`` block of the last two axes (the calibration region); the data are projected onto its
    ``k`` leading eigenvectors. The projection is unitary across coils when ``k == C``, so per-pixel
    root-sum-of-squares energy is unchanged; for ``k < C`` it keeps the largest possible share of the
    total energy of the samples used. Accepts numpy arrays or torch tensors and returns the same kind.
    """
    is_torch = type(kspace).__module__.startswith("torch")
    data = kspace.detach().cpu().numpy() if is_torch else np.asarray(kspace)
    c = data.shape[0]
    if not 1 <= k <= c:
        raise RawDataError(f"coil_compress: k={k} must be in 1..{c}")
    region = data
    if calib is not None:
        if data.ndim < 3:
            raise RawDataError("coil_compress: calib needs k-space with two trailing spatial axes")
        (h, w), n = data.shape[-2:], int(calib)
        region = data[..., max(h // 2 - n // 2, 0):h // 2 - n // 2 + n, max(w // 2 - n // 2, 0):w // 2 - n // 2 + n]
    a = region.reshape(c, -1).astype(np.complex128)
    _, vecs = np.linalg.eigh(a @ a.conj().T)          # ascending eigenvalues
    basis = vecs[:, ::-1][:, :k]                      # [C, k] strongest first
    out = _apply_coils(basis.conj().T, data).astype(data.dtype if np.iscomplexobj(data) else np.complex64)
    if is_torch:
        import torch
        return torch.from_numpy(np.ascontiguousarray(out)).to(kspace.device)
    return out


def check_maps(kspace: Any, maps: Any) -> None:
    """Raise :class:`RawDataError` unless sensitivity maps ``[C, ...]`` have the coil count of ``kspace``."""
    kc, mc = int(kspace.shape[0]), int(maps.shape[0])
    if kc != mc:
        raise RawDataError(f"coil-count mismatch: k-space has {kc} coils, sensitivity maps have {mc} "
                           "(estimate maps from this k-space, or compress both to the same coils)")
