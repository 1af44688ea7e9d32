"""Writing a CLI run's results: arrays, PNGs, the metrics JSON and the summary figure.

A result set ``<save_dir>/<kind>/{input,label,recon}/{name}...`` is written into a scratch folder and then
moved in, replacing every file of an earlier result of the same name (no stale progress frames or
``_std`` maps are left beside the new ones); scratch folders of dead processes are removed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from score_mri.errors import UserError
from score_mri.io.atomic import atomic_write, pid_alive

__all__ = ["check_save_dir", "magnitude", "metrics_of", "save_results", "SaveDirLock", "write_atomic", "write_volume"]


def magnitude(img: np.ndarray) -> np.ndarray:
    """Magnitude image for metrics and PNGs."""
    return np.abs(img) if np.iscomplexobj(img) else np.asarray(img)


def check_save_dir(root: Path) -> None:
    """Refuse (UserError) a results folder that cannot be created or written, before any work is done."""
    for parent in [root, *root.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--save_dir: {parent} exists and is not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"--save_dir: {parent} is not writable")
            return


def metrics_of(label: np.ndarray | None, img: np.ndarray) -> dict | None:
    """fastMRI PSNR/SSIM/NMSE of a magnitude image against the label's magnitude (None without a label)."""
    from score_mri import metrics
    if label is None:
        return None
    return metrics.evaluate(magnitude(label).astype(np.float64), magnitude(img).astype(np.float64))


def _remove_dead_scratch(root: Path) -> None:
    """Remove ``.tmp-<name>-<pid>`` folders left by killed runs."""
    for d in root.glob(".tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _result_files(root: Path, name: str) -> list[Path]:
    """Every file of an earlier result set called ``name`` under ``root``."""
    pats = [f"{sub}/{name}.npy" for sub in ("input", "label", "recon")] + \
           [f"{sub}/{name}.png" for sub in ("input", "label", "recon")] + \
           [f"input/{name}_mask.npy", f"recon/{name}_std.npy", f"recon/{name}_std.png",
            f"recon_progress/{name}_[0-9][0-9][0-9][0-9].png", f"{name}_metrics.json", f"{name}_figure.png"]
    return [p for pat in pats for p in root.glob(pat) if p.is_file()]


def save_results(root: Path, name: str, arrays: dict[str, np.ndarray | None], progress: dict[int, np.ndarray],
                 extra: dict[str, Any], record: dict, figure_title: str) -> None:
    """Write one result set under ``root`` (arrays: input, mask, label, recon, std) and replace the old one."""
    from score_mri.io import figure

    root.mkdir(parents=True, exist_ok=True)
    _remove_dead_scratch(root)
    scratch = root / f".tmp-{name}-{os.getpid()}"
    x_in, label, recon, std = (arrays.get(k) for k in ("input", "label", "recon", "std"))
    try:
        def put(rel: str, array: np.ndarray | None = None, png: bool = False) -> Path:
            p = scratch / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if array is not None:
                if png:
                    figure.save_gray_png(p, magnitude(array))
                else:
                    np.save(p, array)
            return p

        for sub in ("input", "label", "recon"):
            if arrays.get(sub) is not None:
                put(f"{sub}/{name}.npy", arrays[sub])
                put(f"{sub}/{name}.png", arrays[sub], png=True)
        put(f"input/{name}_mask.npy", arrays["mask"])
        if std is not None:
            put(f"recon/{name}_std.npy", std)
            put(f"recon/{name}_std.png", std, png=True)
        for i, img in sorted(progress.items()):
            put(f"recon_progress/{name}_{i:04d}.png", img, png=True)
        for rel, value in extra.items():  # e.g. hybrid's sens/{name}.npy (+ its cache key)
            if isinstance(value, str):
                put(rel).write_text(value)
            else:
                put(rel, value)
        put(f"{name}_metrics.json").write_text(json.dumps(record, indent=2, allow_nan=False) + "\n")

        def title(what: str, m: dict | None) -> str:
            return what if m is None else f"{what}\n{m['psnr']:.2f} dB / SSIM {m['ssim']:.3f}"

        panels = [(title("zero-filled", record.get("zero_filled")), magnitude(x_in)),
                  (title("recon", record.get("recon")), magnitude(recon))]
        if label is not None:
            panels += [("label", magnitude(label)), ("|error|", np.abs(magnitude(label) - magnitude(recon)))]
        if std is not None:
            panels.append((f"std (K={record.get('num_samples')})", magnitude(std)))
        vmax = float(magnitude(label if label is not None else x_in).max()) or 1.0
        figure.save_panels(put(f"{name}_figure.png"), figure_title, panels, vmax)

        new = {p.relative_to(scratch) for p in scratch.rglob("*") if p.is_file()}
        # the old completion marker goes first: a run killed below leaves no marker a resume could trust
        (root / f"{name}_metrics.json").unlink(missing_ok=True)
        for old in _result_files(root, name):  # the new set replaces the old one whole
            if old.relative_to(root) not in new:
                old.unlink()
        # the metrics JSON moves in last: it marks a complete result set (a resumed volume run skips it)
        for rel in sorted(new, key=lambda r: (r.name.endswith("_metrics.json"), str(r))):
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(scratch / rel, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class SaveDirLock:
    """An exclusive lock on ``<save_dir>/.lock-<kind>`` held for a whole run (released when the process ends).

    A second run of the same script into the same save_dir is refused (UserError) instead of mixing its slices
    into the first one's volumes."""

    def __init__(self, save_dir: Path, kind: str):
        check_save_dir(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        self.path = save_dir / f".lock-{kind.replace('/', '_')}"
        self._file = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:     # no advisory locks on this platform: nothing to hold
            return
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "?"
            self._file.close()
            raise UserError(f"another run (pid {holder}) is writing {kind} results into {save_dir}: wait for "
                            f"it to end, or choose another --save_dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def release(self) -> None:
        """Release the lock (closing the file releases it)."""
        if not self._file.closed:
            self._file.close()


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary beside it, so readers never see half of it."""
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_volume(path: Path, reconstruction: np.ndarray, attrs: dict[str, Any]) -> None:
    """fastMRI submission file: dataset ``reconstruction`` [slices, H, W] float32, written atomically."""
    import h5py

    def write(tmp: Path) -> None:
        """The HDF5 file at ``tmp``."""
        with h5py.File(tmp, "w") as f:
            f.create_dataset("reconstruction", data=np.asarray(reconstruction, dtype=np.float32))
            for k, v in attrs.items():
                f.attrs[k] = v

    atomic_write(path, write)
