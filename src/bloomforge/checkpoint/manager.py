"""A training run's checkpoints: everything needed to continue a run bit for bit.

In: the model parts, optimizers, recipe and counters of a run. Out: `RUN/checkpoints/step_XXXXXXXX/`
    model.safetensors, config.yaml, meta.json, tokenizer.json   (a normal model checkpoint:
                                                                 eval/export/generate read it)
    optimizer.safetensors   AdamW moments and step counts: `exp_avg.<parameter name>` ...
    rng.safetensors         torch CPU (and CUDA) generator states of every rank
    trainer.json            step, samples, tokens, skipped, loader and guard state
and in meta.json the sha256 of every file. `Checkpointer` is the one place that names, lists,
chooses, saves, prunes and cleans these folders (as OLMo-core's Checkpointer and torchtitan's
CheckpointManager). Folders are written through `bloomforge.files` (temporary name, fsync,
rename) and only the newest `keep_last` are kept. Under torchrun every rank writes its shards
(DCP, `bloomforge.parallel.checkpoint`) and rank 0 consolidates them into the same files, so a
checkpoint does not depend on the layout that wrote it. At resume the newest folder whose
checksums match is used; a damaged one is reported and the previous one used instead, read into
any layout.
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
from torch import nn

from bloomforge import files
from bloomforge.checkpoint.folder import (
    WEIGHTS,
    Checkpoint,
    cpu_tensors,
    load_folder,
    read_safetensors,
    save_checkpoint,
    verify,
)
from bloomforge.checkpoint.rng import all_rank_rng_tensors
from bloomforge.errors import BloomforgeError
from bloomforge.recipe import Recipe

STEP_PREFIX = "step_"  # RUN/checkpoints/step_00000100
STAGING = ".staging-"  # sharded saves: every rank's DCP shards before rank 0 consolidates them


def fault_point(point: str, step: int) -> None:
    """Test hook: `BLOOMFORGE_FAULT=point@step` kills this process with SIGKILL right here."""
    if os.environ.get("BLOOMFORGE_FAULT") == f"{point}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


class Checkpointer:
    """The checkpoints of the run folder `run`; `keep_last` > 0 keeps only the newest that many
    after each save."""

    def __init__(self, run: str | Path, keep_last: int = 0) -> None:
        self.run = Path(run)
        self.root = self.run / "checkpoints"
        self.keep_last = keep_last

    def folder(self, step: int) -> Path:
        return self.root / f"{STEP_PREFIX}{step:08d}"

    def folders(self) -> list[Path]:
        """The run's checkpoint folders, oldest first (not verified)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and _step(p) is not None]
        return sorted(found, key=_step)

    def newest(self) -> Path | None:
        found = self.folders()
        return found[-1] if found else None

    def newest_valid(self) -> Path | None:
        """The newest checkpoint whose checksums match; damaged newer ones are reported with a
        warning and skipped."""
        for folder in reversed(self.folders()):
            problem = verify(folder, require=True)
            if problem is None:
                return folder
            warnings.warn(f"skipping damaged checkpoint {folder.name}: {problem}", stacklevel=2)
        return None

    def save(
        self,
        step: int,
        parts: list[nn.Module],
        optimizers: list[torch.optim.Optimizer],
        recipe: Recipe,
        trainer_state: dict[str, Any],
        tokenizer_file: Path | None,
        distributed: bool = False,
    ) -> Path:
        """Write `checkpoints/step_N` and prune. Single process: the state dicts as safetensors.
        Distributed (collective; every rank calls it): each rank writes its shards with DCP into
        a staging folder, rank 0 consolidates them and writes the folder; the others wait."""
        from bloomforge.parallel.checkpoint import flat_state, save_sharded, state_dicts

        fault_point("checkpoint-before", step)
        model_state, optimizer_state = flat_state(*state_dicts(parts, optimizers))
        out = self.folder(step)
        staging = self.root / f"{STAGING}{out.name}"
        rank = 0
        rng = all_rank_rng_tensors()  # collective under torchrun: before rank 0 goes its own way
        if distributed:
            import torch.distributed as dist

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
            self.prune()
        if distributed:
            import torch.distributed as dist

            dist.barrier()
        fault_point("checkpoint-after", step)
        return out

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep_last` checkpoints (none when keep_last is 0)."""
        old = self.folders()[: -self.keep_last] if self.keep_last > 0 else []
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)
        return old

    def remove_interrupted_saves(self) -> list[Path]:
        """Delete what killed saves left: the temporary folders of `atomic_directory`
        (`.step_N.tmp-*`, `.step_N.old-*`) and sharded staging folders."""
        if not self.root.is_dir():
            return []
        leftovers = [
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and (
                p.name.startswith(f"{STAGING}{STEP_PREFIX}")
                or (
                    p.name.startswith(f".{STEP_PREFIX}")
                    and (".tmp-" in p.name or ".old-" in p.name)
                )
            )
        ]
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
        return leftovers

    def load(
        self, folder: Path, parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]
    ) -> None:
        """Fill this rank's model part(s) and optimizers from `folder`, whatever layout wrote it."""
        from bloomforge.parallel.checkpoint import load_into

        load_into(parts, optimizers, folder)

    @staticmethod
    def read_trainer_state(folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "trainer.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise BloomforgeError(f"{folder / 'trainer.json'}: unreadable ({e})") from e

    @staticmethod
    def read_rng(folder: Path) -> dict[str, torch.Tensor]:
        return read_safetensors(folder / "rng.safetensors")


def _step(folder: Path) -> int | None:
    """N of a `step_N` folder, else None (a folder of another name is not a checkpoint)."""
    name = folder.name
    digits = name.removeprefix(STEP_PREFIX)
    return int(digits) if name.startswith(STEP_PREFIX) and digits.isdigit() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or for a training run folder its newest checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise BloomforgeError(f"{path}: no such checkpoint folder")
    run = Checkpointer(path)
    if not (path / WEIGHTS).exists() and run.root.is_dir():
        newest = run.newest()
        if newest is None:
            raise BloomforgeError(f"{run.root}: the run has no checkpoint yet")
        return newest
    return path


def load_checkpoint(
    path: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Checkpoint:
    """The checkpoint in `path`, or for a training run folder its newest checkpoint."""
    return load_folder(resolve_checkpoint(path), device, dtype)
