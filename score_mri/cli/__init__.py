"""The command lines: flags (``flags``), the job and per-slice pipeline (``job``), run/main (``common``), the five
reconstruction commands (``scripts``), volumes and torchrun (``batch``), progress lines and training (``train``)."""
