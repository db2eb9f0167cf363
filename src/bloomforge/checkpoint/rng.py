"""The random state a training checkpoint carries (`rng.safetensors`), so a resume continues
every rank's generator streams bit for bit.

In: this process's torch CPU (and CUDA) generators, gathered over ranks under torchrun. Out:
tensors for rank 0 to write; at resume, each rank's own states restored from them.
"""

from __future__ import annotations

import torch


def rng_tensors() -> dict[str, torch.Tensor]:
    """This process's generator states: torch's CPU one and, once CUDA is in use, each GPU's."""
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            out[f"cuda.{i}"] = torch.cuda.get_rng_state(i)
    return out


def all_rank_rng_tensors() -> dict[str, torch.Tensor]:
    """Every rank's generator states, for rank 0 to write (collective under torchrun).

    Keys: `rank{r}.torch`, `rank{r}.cuda.{i}` and `world_size`; rank 0's also under the
    single-process names (`torch`, `cuda.{i}`), so any reader finds them. Ranks hold different
    states once dropout has run on different data or different heads, so each rank keeps its own
    (Megatron writes one RNG state per model-parallel rank file for the same reason)."""
    mine = rng_tensors()
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return mine
    if torch.distributed.get_world_size() == 1:  # a single process's own group (mixed precision)
        return mine
    import torch.distributed as dist

    gathered: list[dict[str, torch.Tensor] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {k: v.cpu() for k, v in mine.items()})
    out = {k: v.clone() for k, v in gathered[0].items()}  # safetensors refuses shared storage
    for r, states in enumerate(gathered):
        out.update({f"rank{r}.{k}": v for k, v in states.items()})
    out["world_size"] = torch.tensor([len(gathered)], dtype=torch.int64)
    return out


def restore_rng(tensors: dict[str, torch.Tensor], rank: int = 0, world_size: int = 1) -> bool:
    """Restore this rank's own generator states. Returns False when the checkpoint was written
    by another number of ranks: then there is no state of this rank to restore, and each rank
    continues from rank 0's (a resharded resume cannot continue every rank's stream)."""
    saved_world = int(tensors["world_size"].item()) if "world_size" in tensors else 1
    own = saved_world == world_size
    prefix = f"rank{rank}." if own and f"rank{rank}.torch" in tensors else ""
    torch.set_rng_state(tensors[f"{prefix}torch"])
    for key, value in tensors.items():
        name = key.removeprefix(prefix) if prefix else key
        if key.startswith(prefix) and name.startswith("cuda.") and torch.cuda.is_available():
            torch.cuda.set_rng_state(value, int(name.split(".")[1]))
    return own
