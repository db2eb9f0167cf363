"""Apply a parallel layout to a freshly built model, in torchtitan's order.

In: a full BloomLM built with the run's seed (identical on every rank), the layout, the mesh and
the train section. Out: `Parallelized`: this rank's model part(s) (one, or one per pipeline stage
it runs), the pipeline runner when pp > 1, and whether FSDP2 wraps the model: under data
parallelism, and always in bf16 / fp16, whose one policy (FSDP2's MixedPrecisionPolicy) holds for
every layout, one process included. Order per part: tensor parallel -> activation checkpointing
-> compile -> FSDP2 per block, then the root.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bloomforge.parallel.dims import ParallelDims
from bloomforge.parallel.pipeline import (
    PipelineRunner,
    build_stage_model,
    stage_indices,
    stage_ranges,
)

LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Parallelized:
    parts: list[nn.Module]
    runner: PipelineRunner | None
    fsdp: bool


def apply_ac_compile(model: nn.Module, activation_checkpointing: bool, compile: bool) -> None:
    """Activation checkpointing and compile per block. Both keep parameter names:
    checkpoint_wrapper strips its prefix from the state dict; `Module.compile()` works in place."""
    if not (activation_checkpointing or compile):
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for name, block in list(model.layers.items()):
        if activation_checkpointing:
            block = checkpoint_wrapper(block, preserve_rng_state=True)
        if compile:
            block.compile()
        model.layers[name] = block


def parallelize(
    model: nn.Module,
    dims: ParallelDims,
    mesh,
    parallel,
    train,
    device: torch.device,
) -> Parallelized:
    stages = [0]
    parts = [model]
    if dims.pp > 1:
        n_stages = dims.pp * parallel.pp_virtual_stages
        ranges = stage_ranges(model.cfg.n_layer, n_stages, parallel.pp_embedding_as_layer)
        stages = stage_indices(mesh["pp"].get_local_rank(), dims.pp, parallel.pp_virtual_stages)
        parts = [build_stage_model(model, s, ranges) for s in stages]
    param_dtype = LOW_PRECISION.get(train.precision)
    fsdp = dims.dp > 1 or param_dtype is not None
    for part in parts:
        if dims.tp > 1:
            from bloomforge.parallel.tensor import apply_tp

            apply_tp(part, mesh["tp"])
        apply_ac_compile(part, train.activation_checkpointing, train.compile)
        if fsdp:
            from bloomforge.parallel.fsdp import apply_fsdp

            apply_fsdp(
                part,
                mesh["dp"],
                param_dtype=param_dtype,
                reshard_after_forward=parallel.zero >= 3,
            )
    runner = None
    if dims.pp > 1:
        runner = PipelineRunner(
            parts,
            stages,
            dims.pp * parallel.pp_virtual_stages,
            device,
            mesh["pp"].get_group(),
            parallel.pp_schedule,
        )
    return Parallelized(parts, runner, fsdp)
