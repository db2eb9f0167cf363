"""One helper for multi-process tests (as OLMo-core's `run_distributed_test`): spawn
`world_size` CPU processes joined by a gloo process group and run `fn(rank, world_size, *args)`
in each. A failure in any rank fails the test with that rank's traceback."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable, world_size: int, port: int, args: tuple[Any, ...]) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)  # world_size processes share the machine's cores
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_distributed_test(fn: Callable, *args: Any, world_size: int = 2) -> None:
    """Run `fn(rank, world_size, *args)` on `world_size` gloo ranks; `fn` must be importable
    (a module-level function) and its arguments picklable."""
    mp.start_processes(
        _worker,
        args=(fn, world_size, _free_port(), args),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
