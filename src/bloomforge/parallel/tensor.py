"""Tensor parallelism with DTensor (`parallelize_module`), Megatron's split of a BLOOM block.

In: a BloomLM and the "tp" mesh dimension. Out: the same model with, in every block, the fused
QKV and the MLP's up (and gate) projections split by output rows (ColwiseParallel) and the
attention output and MLP down projections split by input columns (RowwiseParallel, one
all-reduce each). BLOOM's QKV rows are head-major (per head: q, k, v), so a contiguous row shard
holds whole heads: rank r computes heads [r nh/tp, (r+1) nh/tp) with their own ALiBi slopes
(`Attention.head_start`). Embeddings and LayerNorms stay replicated plain tensors; their
gradients are identical on every TP rank by construction and `sync_replicated_grads` averages
them anyway, so the copies can never drift apart (BLOOM lost weeks to TP ranks whose LayerNorm
weights diverged). A vocabulary-parallel embedding and loss are not implemented.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from bloomforge.errors import BloomforgeError
from bloomforge.parallel.dims import local_part


def apply_tp(model: nn.Module, tp_mesh) -> None:
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    tp = tp_mesh.size()
    cfg = model.cfg
    for name, size in (("model.n_head", cfg.n_head), ("model.ffn_hidden", cfg.ffn_hidden)):
        if size % tp:
            raise BloomforgeError(f"{name}={size} is not divisible by parallel.tp={tp}")
    rank = tp_mesh.get_local_rank()
    for block in model.layers.values():
        plan = {
            "attention.qkv": ColwiseParallel(),
            "attention.out": RowwiseParallel(),
            "mlp.up": ColwiseParallel(),
            "mlp.down": RowwiseParallel(),
        }
        if block.mlp.gate is not None:
            plan["mlp.gate"] = ColwiseParallel()
        parallelize_module(block, tp_mesh, plan)
        attn = block.attention
        attn.n_head = cfg.n_head // tp
        attn.head_start = rank * attn.n_head


def is_tp_sharded(param: torch.Tensor) -> bool:
    mesh = getattr(param, "device_mesh", None)
    return mesh is not None and "tp" in (mesh.mesh_dim_names or ())


@torch.no_grad()
def sync_replicated_grads(model: nn.Module, tp_group) -> None:
    """Average the gradients of parameters that every TP rank holds in full as plain tensors
    (LayerNorms, embeddings) so their copies stay identical. (Row-parallel biases are DTensors
    replicated by DTensor itself.)"""
    grads = []
    for p in model.parameters():
        if p.grad is None or is_tp_sharded(p):
            continue
        g = p.grad
        grads.append(local_part(g))
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=tp_group)
    flat /= dist.get_world_size(tp_group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
