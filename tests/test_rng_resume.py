"""Each rank's random state is saved and restored as its own (dropout on different data or heads
leaves the ranks with different generator states); a resharded resume falls back to rank 0's."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from bloomforge.checkpoint import all_rank_rng_tensors, restore_rng
from distributed import run_distributed_test


def _ranks_save_then_restore(rank: int, world_size: int, folder: str) -> None:
    path = Path(folder) / "rng.safetensors"
    torch.manual_seed(1234)
    torch.rand(10 * (rank + 1))  # the ranks' streams diverge, as with dropout on other data
    states = all_rank_rng_tensors()
    if rank == 0:
        save_file(states, path)
    dist.barrier()
    expected = torch.rand(4)
    torch.manual_seed(0)  # a fresh process at resume
    assert restore_rng(load_file(path), rank, world_size)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
    # on another number of ranks each rank continues from rank 0's state
    assert not restore_rng(load_file(path), rank, world_size + 1)
    got = torch.rand(4)
    torch.set_rng_state(load_file(path)["rank0.torch"])
    torch.testing.assert_close(got, torch.rand(4), rtol=0, atol=0)


def test_each_rank_restores_its_own_random_state(tmp_path):
    run_distributed_test(_ranks_save_then_restore, str(tmp_path), world_size=2)


def test_single_process_checkpoint_restores_as_before(tmp_path):
    torch.manual_seed(5)
    torch.rand(3)
    states = all_rank_rng_tensors()
    assert set(states) == {"torch"}
    expected = torch.rand(4)
    torch.manual_seed(0)
    assert restore_rng(states)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
