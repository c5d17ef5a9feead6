"""Splitting a batch between processes: the processes of one `accelerate launch` /
`torchrun` run (accelerate's `PartialState`), the tasks of a Slurm array job, or shards
given by hand, or both at once. No scheduler of our own: each process takes its share of
the *whole* work list, decided from the list alone, so

- every item is done exactly once across the processes (the shares are disjoint and
  cover the list), whatever each process already finds done on disk;
- a batch stopped with 4 processes can be finished with 1 (or the other way round): each
  process skips the items of its share that are already done;
- per-item seeds come from the item, never from the process, so the images are the same
  whatever the process count.

Shares are contiguous slices, as accelerate's `split_between_processes` cuts them: first
by array task (`--num-shards N --shard-index I`, else `SLURM_ARRAY_TASK_COUNT` /
`SLURM_ARRAY_TASK_ID`), then by process within the task (`WORLD_SIZE` / `RANK`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from core.errors import LabError


@dataclass(frozen=True)
class Shard:
    """This process's place: array task `task` of `tasks`, process `rank` of `world`."""

    task: int = 0
    tasks: int = 1
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        """The process that reports for its process group (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.tasks > 1 or self.world > 1

    @property
    def label(self) -> str:
        parts = []
        if self.tasks > 1:
            parts.append(f"shard {self.task + 1}/{self.tasks}")
        if self.world > 1:
            parts.append(f"process {self.rank + 1}/{self.world}")
        return ", ".join(parts)

    def take(self, items) -> list:
        """This process's share of `items` (a list in a fixed order)."""
        mine = contiguous(list(items), self.task, self.tasks)
        if self.world > 1:
            from accelerate import PartialState

            with PartialState().split_between_processes(mine) as share:
                return list(share)
        return mine

    def gather(self, value) -> list | None:
        """Every process's `value`, in rank order, on the main process (None elsewhere); a
        one-element list when there is one process."""
        if self.world == 1:
            return [value]
        from accelerate.utils import gather_object

        gathered = gather_object([value])
        return gathered if self.is_main else None

    def log(self, message: str) -> None:
        """A progress line on stderr, saying which process wrote it when there are several."""
        prefix = f"[{self.label}] " if self.parallel else ""
        print(prefix + message, file=sys.stderr, flush=True)


def leave_process_group() -> None:
    """Wait for every process of the group, then close it (no-op without one). Without this,
    a process that exits while gloo still has a thread talking to another aborts
    ("terminate called without an active exception") and the launcher fails the run."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def contiguous(items: list, index: int, count: int) -> list:
    """Slice `index` of `count` near-equal contiguous slices (the first ones one longer)."""
    size, extra = divmod(len(items), count)
    start = index * size + min(index, extra)
    return items[start:start + size + (1 if index < extra else 0)]


def current_shard(num_shards: int | None = None, shard_index: int | None = None, env=None) -> Shard:
    """This process's Shard from the flags, else the Slurm array variables; and the
    process group of accelerate / torchrun (WORLD_SIZE, RANK), which is joined here (so a
    multi-GPU process also takes its own GPU). LabError for inconsistent values."""
    env = os.environ if env is None else env
    tasks, task = num_shards, shard_index
    if tasks is None and task is None and env.get("SLURM_ARRAY_TASK_COUNT"):
        tasks = int(env["SLURM_ARRAY_TASK_COUNT"])
        task = int(env.get("SLURM_ARRAY_TASK_ID", 0)) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    tasks = 1 if tasks is None else int(tasks)
    task = 0 if task is None else int(task)
    if tasks < 1 or not 0 <= task < tasks:
        raise LabError(f"--shard-index must be between 0 and --num-shards - 1 (got {task} of {tasks}).")
    world = int(env.get("WORLD_SIZE", 1) or 1)
    rank = int(env.get("RANK", 0) or 0)
    if world > 1:
        from accelerate import PartialState

        import torch

        cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
        state = PartialState(cpu=cpu)  # joins the process group (gloo on CPUs); on GPUs, each process its own
        if state.num_processes != world:
            raise LabError(f"WORLD_SIZE says {world} processes but only {state.num_processes} joined the process "
                           "group: start the batch with accelerate launch or torchrun.")
        world, rank = state.num_processes, state.process_index
    return Shard(task=task, tasks=tasks, rank=rank, world=world)


__all__ = ["Shard", "contiguous", "current_shard", "leave_process_group"]
