"""Data parallelism with ZeRO sharding: FSDP2 `fully_shard`, per block and then the root.

In: a BloomLM (possibly already tensor-parallel or a pipeline stage) and the "dp" mesh dimension.
Out: the model with parameters, gradients and optimizer state sharded over dp (ZeRO-3; with
`reshard_after_forward=False` the parameters stay gathered between forward and backward, ZeRO-2
style). Mixed precision (bf16 or fp16, Megatron's semantics): low-precision parameters and
activations for compute, float32 master weights (the optimizer only sees the float32 shards),
gradients reduced and accumulated in float32. The trainer applies it whenever the precision is
bf16 or fp16, even on one process, so every layout computes the same way.

Gradient reduction is a plain sum (divide factor 1): the training loop already weights every
micro-batch's loss by its share of the global batch's tokens. Besides being exactly the global
token mean, this sidesteps PyTorch issue 162338 (on gloo an FSDP2 AVG reduction can come out
summed).
"""

from __future__ import annotations

import torch
from torch import nn


def apply_fsdp(
    model: nn.Module,
    dp_mesh,
    param_dtype: torch.dtype | None,
    reshard_after_forward: bool = True,
) -> None:
    """param_dtype: the compute dtype of parameters (bf16 / fp16), None: as stored (fp32)."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    # The root holds the embedding (tied to the output), the LayerNorms; it is used last in the
    # forward (the loss), so resharding it right after would only gather it again for backward.
    fully_shard(model, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=False)
    for module in model.modules():  # the setting is per FSDP unit: blocks and root
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            # A plain SUM collective: a divide factor alone becomes PREMUL_SUM (gloo lacks it).
            module.set_force_sum_reduction_for_comms(True)
