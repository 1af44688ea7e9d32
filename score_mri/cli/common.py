"""What the ``inference_*.py`` scripts share: :func:`run` / :func:`main` of a :class:`Script` record.

A script only says what is different about its algorithm (sampler name, input kind, the measurement
convention, extra flags, how to build its operator; ``scripts.py``); flags live in ``flags.py``, the job and the
per-slice pipeline in ``job.py``, input reading in ``io/readers.py``, the reconstruction in ``recon.py`` and
result writing in ``io/outputs.py``. Bad input raises :class:`UserError`, which :func:`main` reports as one line
on stderr with exit status 2, before any result file is written. One slice runs through
:func:`reconstruct_problem`; ``--slice all`` / ``a:b`` and folders of volumes (fastMRI ``.h5``, twix ``.dat``,
MRD ``.mrd``) run the same function in a loop (``batch.py``: volumes, resume, torchrun).
"""
from __future__ import annotations

import sys

from score_mri.cli.flags import DEFAULT_CKPT, DEFAULT_CONFIG, MASK_TYPES, load_config  # noqa: F401  (public names)
from score_mri.cli.job import (Context, Job, Script, check_problem, existing_key, load_model, prepare,  # noqa: F401
                               reconstruct_problem, root_of, run_key)
from score_mri.cli import batch
from score_mri.errors import UserError
from score_mri.io import outputs
from score_mri.io.readers import list_inputs, parse_slices, read_problem, resolve_data
from score_mri.paths import DATA

__all__ = ["UserError", "Script", "Context", "Job", "load_config", "prepare", "run", "reconstruct_problem",
           "run_key", "main"]


def run(script: Script, argv: list[str] | None = None) -> dict:
    """Parse flags, reconstruct, write the results and print a one-line summary; returns the metrics record.

    ``--slice all`` / ``a:b`` or a folder / glob in ``--data`` runs the volume driver (``batch.py``).
    """
    import torch

    job = prepare(script, argv)
    threads = torch.get_num_threads()
    batch.configure_threads(job.args.threads)
    try:
        return _run(job)
    finally:
        torch.set_num_threads(threads)  # an in-process caller keeps its own thread count


def _run(job: Job) -> dict:
    """:func:`run` after the flags: one slice here, volumes and folders in ``batch.run_batch``."""
    script, args = job.script, job.args
    spec = parse_slices(args.slice)
    files = list_inputs(args.data)
    if files is not None or isinstance(spec, slice):
        spec = slice(None) if spec is None else spec  # a folder or glob: every slice unless --slice says
        files = files or [resolve_data(args.data, script.input, getattr(args, "task", None), DATA)]
        return batch.run_batch(job, files, spec)
    path = resolve_data(args.data, script.input, getattr(args, "task", None), DATA)
    problem = read_problem(path, script.input, getattr(args, "task", None), spec, int(job.config.data.image_size),
                           coils=getattr(args, "coils", None), average=getattr(args, "average", None))
    if args.faithful and script.input.coils and path.suffix == ".npy":
        import torch
        from score_mri import utils  # the original's normalize_complex (phase squashed into [0, 1]) on its own inputs
        problem.image = utils.normalize_complex_original(torch.from_numpy(problem.image)).numpy()
    _, root = root_of(job, problem.task)
    outputs.check_save_dir(root)
    check_problem(job, problem)
    old, key = existing_key(root, problem.name), run_key(job, path, problem.name)
    if old is not None and old != key and not args.overwrite:
        changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        raise UserError(f"{root} already holds a result {problem.name} written with other settings "
                        f"({', '.join(changed[:4])}): add --overwrite to replace it, or choose another --save_dir")
    return reconstruct_problem(job, load_model(job), problem)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one line ``warning: <message>`` (no source line) on stderr."""
    (file or sys.stderr).write(f"warning: {str(message).splitlines()[0]}\n")


def main(script: Script, argv: list[str] | None = None) -> None:
    """Entry point of a script: bad input -> one line on stderr and exit status 2, no result files."""
    import warnings
    warnings.showwarning = _one_line_warning
    try:
        run(script, argv)
    except UserError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(2)
    except FloatingPointError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.exit(3)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
