"""Whole volumes and many files: ``--slice all`` / ``a:b`` and ``--data <folder or glob>`` of volume inputs.

A volume input is a fastMRI ``.h5`` or a raw scanner file (Siemens twix ``.dat``, ISMRMRD/MRD ``.mrd`` or
``.h5``); its slices are counted from its headers and the slice ``i`` of ``<file>`` is the result ``<stem>_s<i>``.

The volume driver runs the single-slice pipeline (``inference_common.reconstruct_problem``) in a loop with
one model, writes every slice's result set atomically (its metrics JSON last: the completion marker), and
then assembles ``<save_dir>/<kind>/reconstructions/<file>.h5`` with dataset ``reconstruction``
[slices, H, W] float32 in the input's units, fastMRI's submission layout. With a target (the file's
``reconstruction_rss`` / ``reconstruction_esc``, else the fully sampled slices) the volume metrics follow
fastMRI's ``evaluate.py``: PSNR and NMSE over the volume with ``data_range = target.max()``, SSIM per
slice averaged. ``summary.json`` and ``summary.md`` list all volumes.

Resume: a slice whose metrics JSON holds the same run key is skipped; one with another key is refused
unless ``--overwrite``. Scale-out: under ``torchrun --nproc_per_node K`` the slices still to do are split
statically over the ranks (each on ``cuda:<local rank>`` when the device is CUDA), the ranks meet in a gloo
``all_gather_object`` and rank 0 assembles the volumes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

from score_mri.io import outputs
from score_mri.physics.fft import center_crop
from score_mri.errors import UserError
from score_mri.io.readers import TARGET_KEYS, VOLUME_SUFFIXES, read_problem, slice_count, slice_indices
from score_mri.process_group import ProcessGroup
from score_mri.cli import job as ic
from score_mri.cli.progress import log

__all__ = ["configure_threads", "default_threads", "Dist", "run_batch", "assemble_volume"]


# ---------------------------------------------------------------------------------------------- threads

def default_threads(environ: dict | None = None) -> int:
    """Intra-op threads that do not oversubscribe: the idle cores (CPUs minus the load) per local process."""
    environ = os.environ if environ is None else environ
    cpus = _cpus()
    local = max(1, int(environ.get("LOCAL_WORLD_SIZE", 1)))
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cpus, cpus - busy) // local)


def _cpus() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads(requested: int | None) -> int:
    """Set torch's intra-op threads: ``--threads`` (at most the cores, with a warning), else
    ``$OMP_NUM_THREADS`` (kept), else the default."""
    import warnings

    import torch
    if requested is not None:
        cpus = _cpus()
        if int(requested) > cpus:
            warnings.warn(f"--threads {requested} is more than the {cpus} CPU core(s) here: using {cpus}")
            requested = cpus
        torch.set_num_threads(int(requested))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_threads())
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------- torchrun

class Dist(ProcessGroup):
    """Rank and world size of a torchrun job, or one process; gloo for the small messages of the split."""

    def __init__(self):
        super().__init__("gloo")  # small objects only: gloo on CPU whatever the compute device


# ---------------------------------------------------------------------------------------------- driver

@dataclasses.dataclass
class Item:
    """One slice of one file."""
    path: Path
    index: int
    name: str
    root: Path | None = None        # where its complete result lies (None: still to do)


def _candidate_roots(job) -> list[Path]:
    """Result folders a slice may land in (the real algorithm's task may be detected per file)."""
    task = getattr(job.args, "task", None)
    if job.script.input.real_valued and task is None:
        return [ic.root_of(job, t)[1] for t in ("retrospective", "prospective")]
    return [ic.root_of(job, task or "retrospective")[1]]


def _items(job, files: list[Path], spec) -> list[Item]:
    """Every selected slice of every file; a result of the same name and settings is marked done."""
    items, stems = [], {}
    for path in files:
        if path.suffix.lower() not in VOLUME_SUFFIXES:
            raise UserError(f"--slice {job.args.slice} and folder inputs need volume files "
                            f"({', '.join(VOLUME_SUFFIXES)}), not {path.name}")
        if path.stem in stems and stems[path.stem] != path.resolve():
            raise UserError(f"two inputs share the name {path.stem}: {stems[path.stem]} and {path}")
        stems[path.stem] = path.resolve()
        n = slice_count(path)
        items += [Item(path, i, f"{path.stem}_s{i}") for i in slice_indices(spec, n, path)]
    clash = []
    for root in _candidate_roots(job):
        outputs.check_save_dir(root)
        for it in items:
            old = ic.existing_key(root, it.name)
            if old is None:
                continue
            key = ic.run_key(job, it.path, it.name)
            if old == key and (root / "recon" / f"{it.name}.npy").is_file():
                it.root = root
            elif not job.args.overwrite:
                clash.append((root, it.name, sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))))
    if clash:
        root, name, changed = clash[0]
        raise UserError(f"{len(clash)} result(s) in {root} (e.g. {name}) were written with other settings or "
                        f"inputs ({', '.join(changed[:4])}): add --overwrite to replace them, or choose another "
                        f"--save_dir")
    return items


def run_batch(job, files: list[Path], spec) -> dict:
    """Reconstruct the selected slices of ``files`` (split over torchrun ranks), then assemble the volumes.

    A slice that fails (bad data, a non-finite result) is recorded and the others go on; the volumes and the
    summary are written, and the run then raises the first failure (exit status 2, or 3 when non-finite).
    """
    dist = Dist()
    quiet = job.args.quiet
    lock = None
    try:
        # rank 0 alone decides what is done (another rank reading while rank 0 writes would split differently)
        plan = None
        if dist.rank == 0:
            try:  # one run at a time per save_dir and script: two would mix their slices in one volume
                _items(job, files, spec)          # bad inputs are refused before the save_dir is created
                lock = outputs.SaveDirLock(Path(job.args.save_dir), job.script.kind)
                plan = (None, _items(job, files, spec))     # what is done, decided under the lock
            except UserError as e:
                plan = (str(e), None)
        error, items = dist.broadcast(plan)
        if error:
            raise UserError(error)
        todo = [it for it in items if it.root is None]
        mine = todo[dist.rank::dist.world_size]
        if dist.active and job.opts.device.startswith("cuda"):
            job.opts = dataclasses.replace(job.opts, device=f"cuda:{dist.local_rank}")
        prefix = f"rank {dist.rank}: " if dist.active else ""
        if dist.rank == 0:
            log(f"{len(items)} slices of {len(files)} file(s): {len(items) - len(todo)} done already, "
                f"{len(todo)} to do" + (f" over {dist.world_size} processes" if dist.active else ""), quiet=quiet)
        done, failed = {}, {}
        try:  # a failing rank still reaches the gather below, so the others do not wait for it forever
            model = ic.load_model(job) if mine else None
            for k, it in enumerate(mine, 1):
                try:
                    problem = read_problem(it.path, job.script.input, getattr(job.args, "task", None), it.index,
                                           int(job.config.data.image_size), coils=getattr(job.args, "coils", None),
                                           average=getattr(job.args, "average", None))
                    ic.reconstruct_problem(job, model, problem, tag=f"{prefix}[{k}/{len(mine)}] ")
                except (UserError, FloatingPointError) as e:  # this slice only: the others still run
                    failed[it.name] = (type(e).__name__, f"{it.path.name} slice {it.index}: {e}")
                    sys.stderr.write(f"{prefix}error: {failed[it.name][1]} (the other slices go on)\n")
                    continue
                done[it.name] = str(ic.root_of(job, problem.task)[1])
        except (UserError, FloatingPointError) as e:
            error = (type(e).__name__, str(e))
        gathered = dist.gather((error, done, failed))
        errors = [e for e, _, _ in gathered if e]
        if errors:  # the first failing rank's error, on every rank (a NaN result keeps its own exit status)
            kind, message = errors[0]
            raise (FloatingPointError if kind == "FloatingPointError" else UserError)(message)
        failures: dict[str, tuple[str, str]] = {}
        for _, d, f in gathered:
            failures.update(f)
            for it in items:
                if it.name in d:
                    it.root = Path(d[it.name])
        result = _assemble_all(job, files, items, failures) if dist.rank == 0 else {}
        if failures:
            _, message = next(iter(failures.values()))
            n = len(failures)
            text = (f"{n} of {len(items)} slice(s) failed (first: {message}); the other slices, their volumes "
                    f"and the summary were written")
            raise (FloatingPointError if all(k == "FloatingPointError" for k, _ in failures.values())
                   else UserError)(text)
        return result
    finally:
        if lock is not None:
            lock.release()
        dist.close()


# ---------------------------------------------------------------------------------------------- volumes

def _stack(root: Path, sub: str, names: list[str]) -> np.ndarray | None:
    """Magnitudes of ``<root>/<sub>/<name>.npy`` stacked [S, H, W] (None when one is missing)."""
    paths = [root / sub / f"{n}.npy" for n in names]
    if not all(p.is_file() for p in paths):
        return None
    return np.stack([np.abs(np.load(p)) for p in paths]).astype(np.float32)        # magnitudes (fastMRI)


def _target(path: Path, indices: list[int], label: np.ndarray | None, shape: tuple) -> tuple[np.ndarray | None, str]:
    """The volume's target [S, H, W]: the file's stored reconstruction (fastMRI), else the fully sampled slices."""
    if path.suffix.lower() in (".h5", ".hdf5"):                                 # raw files store none
        import h5py
        with h5py.File(path, "r") as f:
            for key in TARGET_KEYS:
                if key in f and tuple(f[key].shape[-2:]) == tuple(shape[-2:]):
                    return np.asarray(f[key][indices], dtype=np.float32), key       # indices increase
    return (label, "fully sampled") if label is not None else (None, "none")


def assemble_volume(path: Path, root: Path, indices: list[int]) -> dict:
    """Write ``<root>/reconstructions/<stem>.h5`` (and ``.nii.gz``) from the slices' results; its metrics record."""
    from score_mri import metrics
    from score_mri.io import nifti
    names = [f"{path.stem}_s{i}" for i in indices]
    recon = _stack(root, "recon", names)                                      # [S, H, W] input units
    zf, label = _stack(root, "input", names), _stack(root, "label", names)
    target, source = _target(path, indices, label, recon.shape)
    out = root / "reconstructions" / f"{path.stem}.h5"
    outputs.write_volume(out, recon, {"slices": np.asarray(indices, dtype=np.int64), "input": str(path.resolve()),
                                      "target": source})
    nifti.write_beside(out, recon, path)                                      # <stem>.nii.gz beside it
    record = {"volume": path.stem, "file": str(out), "input": str(path.resolve()), "slices": indices,
              "shape": list(recon.shape), "target": source, "recon": None, "zero_filled": None}
    if target is not None:  # evaluate.py first crops target and reconstruction to a centred W x W square
        square = (target.shape[-1], target.shape[-1])
        gt = center_crop(target, square).astype(np.float64)
        record["recon"] = metrics.evaluate(gt, center_crop(recon, square).astype(np.float64))
        record["zero_filled"] = metrics.evaluate(gt, center_crop(zf, square).astype(np.float64))
    return record


def _mean(volumes: list[dict], which: str, keys: tuple[str, ...] = ("psnr", "ssim", "nmse")) -> dict | None:
    """Mean of the volume metrics ``which`` ('recon' or 'zero_filled') over the scored volumes."""
    scored = [v[which] for v in volumes if v[which] is not None]
    return {k: float(np.mean([m[k] for m in scored])) for k in keys} if scored else None


def _markdown(volumes: list[dict]) -> str:
    """The summary table (fastMRI volume metrics; '-' without a target)."""
    def cell(m: dict | None, key: str, fmt: str) -> str:
        return "-" if m is None else format(m[key], fmt)

    def row(first: str, slices: str, target: str, zf: dict | None, rec: dict | None) -> str:
        return (f"| {first} | {slices} | {target} | {cell(zf, 'psnr', '.2f')} | {cell(zf, 'ssim', '.4f')} "
                f"| {cell(rec, 'psnr', '.2f')} | {cell(rec, 'ssim', '.4f')} | {cell(rec, 'nmse', '.4g')} |")

    lines = ["| volume | slices | target | ZF PSNR (dB) | ZF SSIM | PSNR (dB) | SSIM | NMSE |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [row(v["volume"], str(len(v["slices"])) if not v.get("failed") else f"failed: {', '.join(v['failed'])}",
                  v["target"], v["zero_filled"], v["recon"]) for v in volumes]
    n = sum(v["recon"] is not None for v in volumes)
    if n:
        lines.append(row(f"**mean** ({n})", "", "", _mean(volumes, "zero_filled"), _mean(volumes, "recon")))
    return "\n".join(lines) + "\n"


def _complete_indices(job, path: Path, root: Path, selected: list[int]) -> list[int]:
    """The selected slices plus every other slice of ``path`` with a complete result of the same key under root
    (a rerun of a sub-range keeps the slices an earlier run of the same settings put in the volume)."""
    extra = []
    for i in range(slice_count(path)):
        name = f"{path.stem}_s{i}"
        if i not in selected and (root / "recon" / f"{name}.npy").is_file() \
                and ic.existing_key(root, name) == ic.run_key(job, path, name):
            extra.append(i)
    return sorted(set(selected) | set(extra))


def _failed_volume(path: Path, root: Path, failed: dict[int, str]) -> dict:
    """The summary record of a file with failed slices: no volume file (an earlier one is removed), no metrics."""
    out = root / "reconstructions" / f"{path.stem}.h5"
    for stale in (out, out.with_name(f"{path.stem}.nii.gz")):
        stale.unlink(missing_ok=True)  # they would not match this run's slices
    return {"volume": path.stem, "file": None, "input": str(path.resolve()), "slices": [], "shape": None,
            "target": "none", "recon": None, "zero_filled": None,
            "failed": {str(i): message for i, message in sorted(failed.items())}}


def _assemble_all(job, files: list[Path], items: list[Item], failures: dict | None = None) -> dict:
    """Assemble every volume, write summary.json / summary.md per results folder, print one line each.

    ``failures``: slice name -> (error type, message); a file with a failed slice gets no volume file and is
    listed with its failures in the summary. A slice whose result no longer carries this run's key (another
    run replaced it meanwhile) is added to ``failures``: a volume holds only this run's results."""
    failures = {} if failures is None else failures
    by_root: dict[Path, list[dict]] = {}
    for path in files:
        mine = [it for it in items if it.path == path]
        for it in mine:
            if it.root is not None and it.name not in failures \
                    and ic.existing_key(it.root, it.name) != ic.run_key(job, path, it.name):
                failures[it.name] = ("UserError", f"{path.name} slice {it.index}: its result was replaced by "
                                                  f"another run with other settings while this run was working")
        roots = [it.root for it in mine if it.root is not None]
        root = roots[0] if roots else _candidate_roots(job)[0]
        failed = {it.index: failures[it.name][1] for it in mine if it.name in failures}
        if failed:
            record = _failed_volume(path, root, failed)
        else:
            record = assemble_volume(path, root, _complete_indices(job, path, root, [it.index for it in mine]))
        by_root.setdefault(root, []).append(record)
    settings = {k: v for k, v in ic.run_key(job, files[0], "").items() if k not in ("input", "name", "input_id")}
    for root, volumes in by_root.items():
        mean = _mean(volumes, "recon")
        failed = [{"volume": v["volume"], "slice": int(i), "error": m} for v in volumes
                  for i, m in v.get("failed", {}).items()]
        summary = {"volumes": volumes, "mean": mean, "mean_zero_filled": _mean(volumes, "zero_filled"),
                   "failed": failed, "settings": settings}
        outputs.write_atomic(root / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
        outputs.write_atomic(root / "summary.md", _markdown(volumes))
        n = sum(v["recon"] is not None for v in volumes)
        text = f"{mean['psnr']:.2f} dB / {mean['ssim']:.4f} SSIM (mean over {n})" if mean else "no target"
        text += f", {len(failed)} slice(s) failed" if failed else ""
        print(f"{len(volumes)} volume(s): {text} -> {root / 'reconstructions'}", flush=True)
    return {"volumes": [v for vs in by_root.values() for v in vs]}
