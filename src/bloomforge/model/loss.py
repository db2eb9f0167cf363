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
        ctx,
        hidden: Tensor,
        weight: Tensor,
        targets: Tensor,
        weights: Tensor,
        chunk: int,
    ):
        acc = torch.promote_types(hidden.dtype, torch.float32)  # bf16 in, float32 softmax
        denom = _denominator(weights)
        total = torch.zeros((), device=hidden.device, dtype=acc)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        grad_weight = torch.zeros_like(weight, dtype=acc) if weight.requires_grad else None
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            w = weights[start : start + chunk]  # (n,): 0 on targets that do not count
            logits = (h @ weight.t()).to(acc)  # (n, V)
            total += (F.cross_entropy(logits, t, reduction="none") * w).sum()
            # d(sum w CE)/d logits = w (softmax - one_hot); / denom for the (weighted) mean.
            # Masks, not indexing: no host sync.
            grad = logits.softmax(dim=-1)
            grad.scatter_add_(1, t[:, None], -torch.ones_like(grad[:, :1]))
            grad = (grad * (w / denom)[:, None]).to(hidden.dtype)
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


def _denominator(weights: Tensor) -> Tensor:
    """sum(w), or 1 when nothing counts (the loss of an empty selection is 0, not NaN)."""
    total = weights.sum()
    return torch.where(total > 0, total, torch.ones_like(total))


def _linear_cross_entropy_no_grad(
    hidden: Tensor, weight: Tensor, targets: Tensor, weights: Tensor, chunk: int
) -> Tensor:
    """The same loss without any gradient work (validation, evaluation under no_grad)."""
    acc = torch.promote_types(hidden.dtype, torch.float32)
    total = torch.zeros((), device=hidden.device, dtype=acc)
    for start in range(0, hidden.shape[0], chunk):
        logits = (hidden[start : start + chunk] @ weight.t()).to(acc)
        ce = F.cross_entropy(logits, targets[start : start + chunk], reduction="none")
        total += (ce * weights[start : start + chunk]).sum()
    return total / _denominator(weights)


def fused_linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    weights: Tensor | None = None,
) -> Tensor:
    """Mean next-token cross-entropy of `hidden @ weight.T` against `targets` (all flattened).

    weights: optional per-target weights (shape of targets); the loss is then
    sum(w * CE) / sum(w) over the counted targets: Megatron's `sum(losses * loss_mask) /
    loss_mask.sum()` with a reweighted loss mask (pretrain_prefix_lm.py, reweight_loss_mask_).
    With gradients disabled (validation) nothing of the backward pass is computed: the fused
    path works out the (V, h) weight gradient during the forward, which under `torch.no_grad()`
    would only cost memory (14 GB at 176B shapes) and time.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    acc = torch.promote_types(hidden.dtype, torch.float32)
    counted = targets != ignore_index
    w = counted.to(acc) if weights is None else weights.reshape(-1).to(acc) * counted
    targets = targets.masked_fill(~counted, 0)  # any valid id; its weight is 0
    if not (torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)):
        return _linear_cross_entropy_no_grad(hidden, weight, targets, w, chunk_size)
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, w, chunk_size)


def next_token_targets(input_ids: Tensor, ignore_index: int = -100) -> Tensor:
    """Targets (B, T) for inputs (B, T): the next id, `ignore_index` at the last position."""
    return F.pad(input_ids[:, 1:], (0, 1), value=ignore_index)
