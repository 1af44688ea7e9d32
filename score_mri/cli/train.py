"""Train or evaluate the score prior (Chung & Ye 2022; README "Training a prior"): ``python main_fastmri.py --config <cfg.py> --workdir <dir>``.

Modes: ``train`` (resumes from ``<workdir>/checkpoints-meta/checkpoint.pth`` when present) and ``eval``
(held-out loss of saved checkpoints and optional samples under ``<workdir>/<eval_folder>``). Launch with
``torchrun --nproc_per_node N main_fastmri.py ...`` for multi-process training.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (a configs/*.py file).", lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory (checkpoints, logs, samples).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Running mode: train or eval.")
flags.DEFINE_string("eval_folder", "eval", "Folder under the work directory for evaluation results.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(msg: str, status: int = 2) -> None:
    """Print a one-line error (no traceback) and exit."""
    print(f"error: {' '.join(str(msg).split())}", file=sys.stderr)
    sys.exit(status)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing; flag and config-file mistakes become a one-line error with exit status 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(e)
    except AttributeError as e:  # a --config.<field>=... override naming a field the config lacks
        _fail(f"bad config override: the config has no field {str(e).strip(chr(34))}")
    except Exception as e:  # errors raised while executing the config file
        _fail(f"cannot load the config: {type(e).__name__}: {e}")


def main(argv: list[str]) -> None:
    """Dispatch to run_lib.train / eval_lib.evaluate with clear errors for user mistakes."""
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    from score_mri.training import datasets
    from score_mri.training import losses
    from score_mri.training import eval_lib, run_lib
    from models.checkpoint import CheckpointError

    config = FLAGS.config
    try:
        os.makedirs(FLAGS.workdir, exist_ok=True)
        if FLAGS.mode == "train":
            run_lib.train(config, FLAGS.workdir)
        else:
            eval_lib.evaluate(config, FLAGS.workdir, FLAGS.eval_folder)
    except (run_lib.UserError, datasets.DatasetError, CheckpointError) as e:
        _fail(e)
    except (AttributeError, KeyError) as e:
        # a config missing a field the code needs (locked ConfigDict raises these)
        if "config" in type(e).__module__ or "ml_collections" in repr(type(e)) or "field" in str(e):
            _fail(f"bad config: {e}")
        raise
    except losses.NonFiniteLossError as e:
        _fail(f"{e}; training stopped, no checkpoint written for this step "
              "(lower config.optim.lr or check the data)", status=1)
    except OSError as e:
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else e)


def run() -> None:
    """Console command ``score-mri-train`` (and ``python main_fastmri.py``): parse absl flags, then :func:`main`."""
    app.run(main, flags_parser=_parse_flags)
