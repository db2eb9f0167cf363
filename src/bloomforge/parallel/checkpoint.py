"""Model and optimizer state under any layout, saved and loaded through
`torch.distributed.checkpoint` (DCP) in safetensors.

In: this rank's model part(s) and optimizers (plain, FSDP2-sharded, tensor-parallel or pipeline
stages). Out: flat state dicts keyed by the full model's parameter names (`name` for weights,
`exp_avg.name`, `exp_avg_sq.name`, `step.name` for AdamW), the names single-process checkpoints
use. Saving under torchrun: every rank writes its own shards with DCP's safetensors writer, then
rank 0 consolidates them into `model.safetensors` / `optimizer.safetensors` (a normal checkpoint
that eval, export and generate read). Loading on any layout: DCP reads each rank's pieces of those
files and reshards on the fly (dp2 -> tp2, pp2 -> one process, ...). Nothing is unpickled.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from bloomforge import files


def state_dicts(
    parts: list[nn.Module], optimizers: list[torch.optim.Optimizer]
) -> tuple[list[dict], list[dict]]:
    """Per part: the model state dict and the optimizer's (FQN-keyed, DTensor-aware)."""
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    models = [get_model_state_dict(part) for part in parts]
    optims = [get_optimizer_state_dict(p, o) for p, o in zip(parts, optimizers, strict=True)]
    return models, optims


def flat_state(
    models: list[dict], optims: list[dict]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(weights by name, optimizer tensors as `key.name`) over all parts."""
    model_sd = {k: v for sd in models for k, v in sd.items()}
    # 0-d tensors (AdamW's step counts) are stored as shape (1,) views: DCP's safetensors
    # consolidation writes 0-d tensors as zeros. A view, so loading in place still fills them.
    optim_sd = {
        f"{key}.{name}": value.view(1) if value.ndim == 0 else value
        for osd in optims
        for name, entry in osd["state"].items()
        for key, value in entry.items()
    }
    return model_sd, optim_sd


def save_sharded(state: dict[str, torch.Tensor], staging: Path, name: str) -> Path:
    """All ranks write their shards of `state`; rank 0 consolidates them into
    `staging/NAME.safetensors` (returned). Collective: every rank must call it."""
    from torch.distributed.checkpoint import save
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageWriter

    parts = staging / f"dcp-{name}"
    writer = HuggingFaceStorageWriter(str(parts), save_distributed=True, enable_consolidation=True)
    save(state, storage_writer=writer)
    out = staging / f"{name}.safetensors"
    if dist.get_rank() == 0:
        (consolidated,) = sorted(parts.glob("*.safetensors"))
        files.move(consolidated, out)
        shutil.rmtree(parts)
    dist.barrier()
    return out


def load_into(
    parts: list[nn.Module], optimizers: list[torch.optim.Optimizer], folder: Path
) -> None:
    """Fill this rank's model part(s) and optimizers from a checkpoint folder, whatever layout
    wrote it (DCP reads only this rank's slices of each tensor)."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.hf_storage import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    models, optims = state_dicts(parts, optimizers)
    model_sd, optim_sd = flat_state(models, optims)
    # DCP copies into these tensors in place (the parameters and moments themselves, or the
    # local shards of their DTensors); the set_* calls then load them through the usual hooks.
    load(
        {**model_sd, **optim_sd},
        storage_reader=HuggingFaceStorageReader(str(folder)),
        no_dist=not (dist.is_available() and dist.is_initialized()),
    )
    for part, opt, msd, osd in zip(parts, optimizers, models, optims, strict=True):
        set_model_state_dict(part, msd)
        set_optimizer_state_dict(part, opt, osd)
