"""Language-model loss: the output projection and cross-entropy fused and done in chunks.

In: final hidden states (N, h), the output matrix (V, h) (the tied embedding for BLOOM), target
ids (N,) with `ignore_index` for positions that do not count. Out: the mean cross-entropy over
counted positions, with gradients for the hidden states and the matrix.

The full logits of a batch are the largest tensor of a step (one 2048-token sequence over BLOOM's
250880 tokens is 2 GB in float32). Here they exist one chunk of tokens at a time: the forward
pass computes each chunk's logits, its loss and, right away, its gradients (softmax - one_hot),
so nothing of size N x V is kept for the backward pass, which only scales the stored gradients.
Same FLOPs as logits + `F.cross_entropy`; far less memory and memory traffic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, chunk: int
    ):
        needs_grad = hidden.requires_grad or weight.requires_grad
        acc = torch.promote_types(hidden.dtype, torch.float32)  # bf16 in, float32 softmax
        counted = (targets != ignore_index).sum()
        denom = counted.clamp(min=1).to(acc)
        total = torch.zeros((), device=hidden.device, dtype=acc)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=acc) if weight.requires_grad else None
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            logits = (h @ weight.t()).to(acc)  # (n, V)
            total += F.cross_entropy(logits, t, ignore_index=ignore_index, reduction="sum")
            if not needs_grad:
                continue
            # d(sum CE)/d logits = softmax - one_hot, zero on ignored rows; / denom for the mean
            valid = (t != ignore_index)[:, None]  # (n, 1); masks, not indexing: no host sync
            grad = logits.softmax(dim=-1)
            grad.scatter_add_(1, t.clamp(min=0)[:, None], -valid.to(grad.dtype))
            grad = (grad * (valid / denom)).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk] = grad @ weight
            if grad_weight is not None:
                grad_weight += (grad.t() @ h).to(acc)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total / denom

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        gh = None if grad_hidden is None else grad_hidden * grad_out.to(grad_hidden.dtype)
        gw = None if grad_weight is None else grad_weight * grad_out.to(grad_weight.dtype)
        return gh, gw, None, None, None


def fused_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    chunk_size: int = 1024,
) -> Tensor:
    """Mean next-token cross-entropy of `hidden @ weight.T` against `targets` (all flattened)."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, ignore_index, chunk_size)


def next_token_targets(input_ids: Tensor, ignore_index: int = -100) -> Tensor:
    """Targets (B, T) for inputs (B, T): the next id, `ignore_index` at the last position."""
    return F.pad(input_ids[:, 1:], (0, 1), value=ignore_index)
