"""torchrun / DDP plumbing: detect the launcher from RANK, set up the process group, rank-0 gates.

One process and N processes run the same training code; with ``WORLD_SIZE`` unset everything
here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0  # this process's global rank
    local_rank: int = 0  # rank on this machine (which GPU)
    world_size: int = 1  # number of processes

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE), or a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    return Dist(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                world_size=int(os.environ["WORLD_SIZE"]))


def setup(d: Dist, device: torch.device) -> None:
    """Join the process group: nccl on CUDA, gloo on CPU."""
    if d.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=d.rank, world_size=d.world_size,
                                device_id=device if device.type == "cuda" else None)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum a tensor over processes (in place); identity for one process."""
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_int(value: int, d: Dist, device: torch.device) -> int:
    """Rank 0's value (e.g. a stop decision), shared with every rank."""
    if not d.enabled:
        return value
    t = torch.tensor([value], device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
