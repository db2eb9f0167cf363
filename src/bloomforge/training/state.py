"""Training checkpoints: everything needed to continue a run bit for bit, written atomically.

In: the model, optimizer, loader and counters of a run. Out: `RUN/checkpoints/step_XXXXXXXX/`
    model.safetensors, config.yaml, meta.json, tokenizer.json   (a normal model checkpoint:
                                                                 eval/export/generate read it)
    optimizer.safetensors   AdamW moments and step counts: `exp_avg.<parameter name>` ...
    rng.safetensors         torch CPU (and CUDA) generator states of every rank
    trainer.json            step, samples, tokens, skipped, loader and guard state
and in meta.json the sha256 of every file. Folders are written under a temporary name, fsynced
and renamed, and only the newest `keep_last` are kept. Under torchrun every rank writes its shards
(DCP) and rank 0 consolidates them into the same files, so a checkpoint does not depend on the
layout that wrote it. At resume the newest folder whose checksums match is used; a damaged one is
reported and the previous one used instead (`bloomforge.parallel.checkpoint.load_into` reads it
into any layout).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bloomforge import files
from bloomforge.checkpoint import (
    STEP_PREFIX,
    cpu_tensors,
    read_safetensors,
    run_checkpoints,
    save_checkpoint,
)
from bloomforge.checkpoint import verify as verify_checkpoint
from bloomforge.errors import BloomforgeError
from bloomforge.recipe import Recipe

PREFIX = STEP_PREFIX


def fault_point(point: str, step: int) -> None:
    """Test hook: `BLOOMFORGE_FAULT=point@step` kills this process with SIGKILL right here."""
    if os.environ.get("BLOOMFORGE_FAULT") == f"{point}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_dirs(run: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    return run_checkpoints(run)


def save_training_checkpoint(
    run: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, torch.Tensor],
    recipe: Recipe,
    trainer_state: dict[str, Any],
    tokenizer_file: Path | None,
    keep_last: int,
    distributed: bool = False,
) -> Path:
    """Write `checkpoints/step_N`. Single process: the state dicts as safetensors. Distributed
    (collective; every rank calls it): each rank writes its shards with DCP into a staging
    folder, rank 0 consolidates them and writes the folder; the others wait."""
    out = run / "checkpoints" / f"{PREFIX}{step:08d}"
    staging = run / "checkpoints" / f".staging-{PREFIX}{step:08d}"
    rank = 0
    rng = all_rank_rng_tensors()  # collective under torchrun: before rank 0 goes its own way
    if distributed:
        import torch.distributed as dist

        from bloomforge.parallel.checkpoint import save_sharded

        rank = dist.get_rank()
        if rank == 0:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        dist.barrier()
        save_sharded(model_state, staging, "model")
        save_sharded(optimizer_state, staging, "optimizer")

    def extra(tmp: Path) -> None:
        if distributed:
            for name in ("model", "optimizer"):
                files.move(staging / f"{name}.safetensors", tmp / f"{name}.safetensors")
        else:
            # files: in atomic_directory
            save_file(cpu_tensors(optimizer_state), tmp / "optimizer.safetensors")
        save_file(rng, tmp / "rng.safetensors")  # files: in atomic_directory
        files.write_json(tmp / "trainer.json", trainer_state, ensure_ascii=True)
        fault_point("checkpoint-write", step)  # model written, the rest not yet renamed

    if rank == 0:
        save_checkpoint(
            out,
            None if distributed else model_state,
            recipe,
            tokenizer_file,
            meta={"step": step, "tokens": trainer_state["tokens"]},
            extra=extra,
        )
        shutil.rmtree(staging, ignore_errors=True)
        for old in checkpoint_dirs(run)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    if distributed:
        import torch.distributed as dist

        dist.barrier()
    return out


def remove_interrupted_saves(run: Path) -> list[Path]:
    """Delete what killed saves left in `run/checkpoints`: the temporary folders of
    `atomic_directory` (`.step_N.tmp-*`, `.step_N.old-*`) and sharded staging folders."""
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    leftovers = [
        p
        for p in root.iterdir()
        if p.is_dir()
        and (
            p.name.startswith(f".staging-{PREFIX}")
            or (p.name.startswith(f".{PREFIX}") and (".tmp-" in p.name or ".old-" in p.name))
        )
    ]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers


def verify(folder: Path) -> str | None:
    """None if the training checkpoint's files all match their recorded checksums."""
    return verify_checkpoint(folder, require=True)


def latest_valid_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported with a warning."""
    for folder in reversed(checkpoint_dirs(run)):
        problem = verify(folder)
        if problem is None:
            return folder
        warnings.warn(f"skipping damaged checkpoint {folder.name}: {problem}", stacklevel=2)
    return None


def read_trainer_state(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BloomforgeError(f"{folder / 'trainer.json'}: unreadable ({e})") from e


def read_rng(folder: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(folder / "rng.safetensors")


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
