"""The process group from torchrun's environment, and rank-aware messages.

In: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT as torchrun (or Slurm + torchrun) sets them.
Out: an initialised default process group (NCCL on GPUs, gloo on CPU), the rank and world size.
"""

from __future__ import annotations

import os

import torch


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_single_process_group(device: torch.device) -> None:
    """A one-rank process group, for single-process runs that use FSDP2 (mixed precision):
    nothing leaves the process, the group only gives FSDP2 and DCP a mesh to work on."""
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise RuntimeError("a multi-rank process group exists; pass its rank and size")
        return
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """Join the process group torchrun describes; returns (rank, world_size)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()
