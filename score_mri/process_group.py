"""The torchrun process group shared by training (``run_lib``) and batch reconstruction (``batch``)."""
from __future__ import annotations

import datetime
import importlib
import os

__all__ = ["ProcessGroup"]


class ProcessGroup:
    """Rank facts of a torchrun job (``RANK``/``WORLD_SIZE`` set, more than one process), or one process.

    ``active`` when launched by torchrun with several processes; the group is created here (and destroyed
    by :meth:`close`) unless one exists already.
    """

    def __init__(self, backend: str = "gloo"):
        env = os.environ
        self.active = "RANK" in env and "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1
        self.rank = int(env.get("RANK", 0)) if self.active else 0
        self.world_size = int(env.get("WORLD_SIZE", 1)) if self.active else 1
        self.local_rank = int(env.get("LOCAL_RANK", 0)) if self.active else 0
        self.is_main = self.rank == 0
        self.owns_group = False
        if self.active:
            import torch.distributed as dist
            if not dist.is_initialized():
                # DistributedDataParallel imports torch.distributed.nn on first use, whose functions bind the
                # default group existing at import time as a default argument (group=group.WORLD). Imported
                # after init_process_group, that reference outlives destroy_process_group, so gloo's threads
                # kept running until interpreter exit, where tearing them down raced with another rank still
                # running ("terminate called without an active exception", SIGABRT). Imported first, the
                # defaults bind None and close() really ends the group.
                importlib.import_module("torch.distributed.nn")
                dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
                self.owns_group = True

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every rank's ``obj``, indexed by rank (also a barrier)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op in a single process)."""
        if self.active:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group created here, so its backend threads end before the interpreter does."""
        if self.owns_group:
            import torch.distributed as dist
            dist.destroy_process_group()
            self.owns_group = False
