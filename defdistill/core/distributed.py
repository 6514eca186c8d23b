"""Multi-process data-parallel training under `torchrun` (DistributedDataParallel).

`torchrun --nproc_per_node N -m defdistill train-teacher ...` starts N copies of the command;
torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each. `session` joins them into one process
group (NCCL on CUDA, one GPU per process; gloo on the CPU), `fit` then splits every global
batch evenly between the processes and averages their gradients through DDP, and only rank 0
writes runs, checkpoints, caches and table rows. Without torchrun nothing here does anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import DefdistillError
from .processes import die_with_parent

T_ = TypeVar("T_")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """The world torchrun describes in the environment (a single process when it does not)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DefdistillError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)"
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise DefdistillError(f"RANK {rank} does not fit WORLD_SIZE {size}: launch with torchrun")
    return World(rank, local_rank, size)


def current_world() -> World:
    """The process group this process has joined, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(
            dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())), dist.get_world_size()
        )
    return World()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[tuple[World, torch.device]]:
    """Join torchrun's process group for the duration of one command, and pick this rank's device.

    Yields the world and the device this process trains on: `cuda:LOCAL_RANK` when `device`
    is CUDA, `device` otherwise. A group that is already initialised (by the caller) is used
    as it is and left open; one this function opens it also closes.
    """
    world = launched_world()
    if not world.distributed:
        yield World(), device
        return
    die_with_parent()  # a rank never outlives torchrun's agent (SIGKILL on it included)
    if device.type == "mps":
        raise DefdistillError(
            "multi-process training runs on CUDA or the CPU, not MPS: pass --device cuda or cpu"
        )
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise DefdistillError(
                f"LOCAL_RANK {world.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                "start at most one process per GPU (torchrun --nproc_per_node)"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    opened = not dist.is_initialized()
    if opened:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield current_world(), device
    finally:
        if opened:
            dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if current_world().distributed:
        dist.barrier()


def main_first(fn: Callable[[], T_]) -> T_:
    """Run `fn` on rank 0 first, then on the other ranks: rank 0 writes what the others read
    (a cache, a run), so they never race for the same file."""
    world = current_world()
    if world.is_main:
        result = fn()
        barrier()
        return result
    barrier()
    return fn()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over the ranks (itself without a process group)."""
    if current_world().distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for dropout on one rank in one epoch: ranks draw different masks, and an epoch's
    masks do not depend on whether training resumed before it."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**63
