"""Processes and devices: the same training script alone or under ``torchrun`` (DDP or FSDP2).

``torchrun --nproc_per_node=N`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; :func:`setup`
then joins the process group (NCCL on CUDA, gloo on CPU). Every process builds the same global
batch and takes its own rows, and losses are normalised by global counts, so the gradient equals
the single-process one whatever the number of processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lmforge.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs and which part of the world it is."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Runtime:
    """Pick the device and, under ``torchrun``, join the process group."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but torch.cuda.is_available() is False; use device=cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        place = torch.device("cuda", local_rank)
    else:
        place = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return Runtime(place, rank, world_size, local_rank)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux, CPU).

    A training step frees and reallocates the same large activations every step. glibc serves
    blocks above 32 MB with ``mmap`` and unmaps them on free, so every step page-faults them in
    again (measured 3x slower conversions and softmaxes on a VM). Serving everything from the heap
    (``M_MMAP_MAX=0``) and never trimming it (``M_TRIM_THRESHOLD``) keeps the pages. The process
    holds its peak memory until it exits. Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def teardown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, runtime: Runtime, strategy: str, shard_modules: Sequence[nn.Module]) -> nn.Module:
    """Wrap for data parallelism: DDP, or FSDP2 ``fully_shard`` on each block and on the root."""
    if not runtime.distributed:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in shard_modules:
            fully_shard(block)
        fully_shard(module)
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids)


@contextlib.contextmanager
def no_gradient_sync(module: nn.Module, skip: bool) -> Iterator[None]:
    """Accumulate gradients locally (no all-reduce) for all but the last micro-batch of a step."""
    if not skip:
        yield
        return
    fsdp_sync = getattr(module, "set_requires_gradient_sync", None)
    if hasattr(module, "no_sync"):  # DDP
        with module.no_sync():  # type: ignore[operator]
            yield
    elif callable(fsdp_sync):  # FSDP2
        fsdp_sync(False)
        try:
            yield
        finally:
            fsdp_sync(True)
    else:
        yield


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place; returned for convenience)."""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_flag(flag: bool, runtime: Runtime) -> bool:
    """Rank 0's decision, for every process (e.g. a wall-time limit reached)."""
    if not runtime.distributed:
        return flag
    value = torch.tensor([int(flag)], device=runtime.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()
