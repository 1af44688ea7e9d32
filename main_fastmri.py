"""Train or evaluate the score prior (Chung & Ye 2022; README "Training a prior"): ``python main_fastmri.py --config <cfg.py> --workdir <dir>``.

Modes: ``train`` (resumes from ``<workdir>/checkpoints-meta/checkpoint.pth`` when present) and ``eval``
(held-out loss of saved checkpoints and optional samples under ``<workdir>/<eval_folder>``). Launch with
``torchrun --nproc_per_node N main_fastmri.py ...`` for multi-process training.
"""
from score_mri.cli.train import run

if __name__ == "__main__":
    run()
