"""Attention: ALiBi slopes, the masks (causal, prefix-LM, padding, documents) and one `attend`.

In: per-forward mask facts (`MaskSpec`: lengths, key padding, prefix lengths, document ids,
positions) and per-layer q, k, v of shape (B, nh, T, hs). Out: the attention output (B, nh, Tq, hs).

The mask and ALiBi bias are built once per forward (`AttentionContext`) and shared by all layers.
Three implementations compute the same function: `reference` (explicit scores + additive bias,
softmax in float32, as transformers' BLOOM does), `sdpa` (PyTorch's fused
`scaled_dot_product_attention` with the bias as `attn_mask`) and `flex` (FlexAttention with the
ALiBi bias as a `score_mod` and the mask as a `mask_mod`; fused only under `torch.compile`).

Queries are the last Tq of the Tk key columns (a KV cache holds the first Tk - Tq). Every query
may always see its own key, so a padded query row is never empty (its output is ignored).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def alibi_slopes(n_head: int) -> Tensor:
    """BLOOM's ALiBi slopes (Press et al. 2022), including head counts that are not a power of 2.

    For 2^k heads the slopes are the geometric sequence 2^(-8/2^k * i), i = 1..2^k; otherwise the
    2^k closest-power slopes are followed by every other slope of the 2^(k+1) sequence.
    """
    closest = 2 ** math.floor(math.log2(n_head))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base**i for i in range(1, closest + 1)]
    if closest != n_head:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        n_rest = min(closest, n_head - closest)
        slopes += [extra**i for i in range(1, 1 + 2 * n_rest, 2)]
    return torch.tensor(slopes, dtype=torch.float32)


@dataclass
class MaskSpec:
    """What each query may attend to, for one forward pass.

    key_valid: (B, Tk) bool, False for padding; None when nothing is padded.
    prefix_len: (B,) long, prefix-LM: key columns < prefix_len are visible to every query.
    doc_ids: (B, Tk) int, document of each column of a packed sequence; None: one document.
    is_input: (B, Tk) bool, non-causal multitask finetuning: a query inside a sample's input sees
        the whole input (Megatron-DeepSpeed `get_packed_attention_mask` with is_causal=False:
        causal | is_input[q] & is_input[k], then the segment mask); None: causal inputs.
    q_pos / k_pos: (B, Tq) / (B, Tk) token positions (ALiBi distances, rotary, learned).
    """

    q_len: int
    k_len: int
    q_pos: Tensor
    k_pos: Tensor
    key_valid: Tensor | None = None
    prefix_len: Tensor | None = None
    doc_ids: Tensor | None = None
    is_input: Tensor | None = None

    @property
    def offset(self) -> int:
        return self.k_len - self.q_len

    @property
    def plain_causal(self) -> bool:
        return (
            self.key_valid is None
            and self.prefix_len is None
            and self.doc_ids is None
            and self.is_input is None
        )

    def allowed(self) -> Tensor:
        """(B or 1, 1, Tq, Tk) bool: True where the query may see the key."""
        device = self.q_pos.device
        q = torch.arange(self.q_len, device=device)[:, None] + self.offset  # (Tq, 1)
        k = torch.arange(self.k_len, device=device)[None, :]  # (1, Tk)
        ok = (k <= q)[None]  # (1, Tq, Tk)
        if self.prefix_len is not None:
            ok = ok | (k[None] < self.prefix_len[:, None, None])
        if self.is_input is not None:
            inp_q = self.is_input[:, self.offset :]
            ok = ok | (inp_q[:, :, None] & self.is_input[:, None, :])
        if self.doc_ids is not None:
            doc_q = self.doc_ids[:, self.offset :]
            ok = ok & (doc_q[:, :, None] == self.doc_ids[:, None, :])
        if self.key_valid is not None:
            ok = ok & self.key_valid[:, None, :]
        ok = ok | (k == q)[None]
        return ok[:, None]

    def mask_mod(self):
        """The same predicate as `allowed`, as a FlexAttention mask_mod(b, h, q_idx, kv_idx)."""
        offset, prefix, docs, valid = self.offset, self.prefix_len, self.doc_ids, self.key_valid
        inputs = self.is_input

        def mod(b, h, q_idx, kv_idx):
            q_abs = q_idx + offset
            ok = kv_idx <= q_abs
            if prefix is not None:
                ok = ok | (kv_idx < prefix[b])
            if inputs is not None:
                ok = ok | (inputs[b, q_abs] & inputs[b, kv_idx])
            if docs is not None:
                ok = ok & (docs[b, q_abs] == docs[b, kv_idx])
            if valid is not None:
                ok = ok & valid[b, kv_idx]
            return ok | (kv_idx == q_abs)

        return mod


def alibi_bias(spec: MaskSpec, slopes: Tensor) -> Tensor:
    """(B, nh, Tq, Tk) float32: -slope * |pos_q - pos_k| (causally: slope * (pos_k - pos_q))."""
    dist = (spec.q_pos[:, :, None] - spec.k_pos[:, None, :]).abs().to(torch.float32)
    return -slopes[None, :, None, None] * dist[:, None]


class AttentionContext:
    """Mask and bias for one forward, materialised once in the form `impl` needs."""

    def __init__(
        self,
        spec: MaskSpec,
        impl: str,
        slopes: Tensor | None,
        dtype: torch.dtype,
        dropout: float = 0.0,
    ) -> None:
        self.impl = impl
        self.dropout = dropout
        self.is_causal = False
        self.attn_mask: Tensor | None = None
        self.score_mod = None
        self.block_mask = None
        self._spec, self._slopes = spec, slopes
        self._head_views: dict[tuple[int, int], AttentionContext] = {}
        if impl == "flex":
            self._build_flex(spec, slopes)
            return
        if slopes is None and spec.plain_causal and spec.offset == 0 and impl == "sdpa":
            self.is_causal = True  # the fused kernels' own causal mask, nothing materialised
            return
        allowed = spec.allowed()
        if slopes is None and impl == "sdpa":
            self.attn_mask = allowed
            return
        bias = torch.zeros((), device=allowed.device, dtype=torch.float32)
        if slopes is not None:
            bias = alibi_bias(spec, slopes)
        # -inf, not finfo.min: a row always has its diagonal, so softmax never sees all -inf.
        self.attn_mask = bias.masked_fill(~allowed, float("-inf")).to(dtype)

    def _build_flex(self, spec: MaskSpec, slopes: Tensor | None) -> None:
        from torch.nn.attention.flex_attention import create_block_mask

        mask_mod = spec.mask_mod()
        batch = None if spec.plain_causal else spec.q_pos.shape[0]
        self.block_mask = create_block_mask(
            mask_mod, batch, None, spec.q_len, spec.k_len, device=spec.q_pos.device
        )
        if slopes is not None:
            self.score_mod = _alibi_score_mod(spec, slopes)

    def heads(self, start: int, n: int) -> AttentionContext:
        """The context for heads start..start+n-1 only (a tensor-parallel rank's heads): the
        ALiBi bias of those heads; masks without a per-head bias are shared as they are."""
        slopes = self._slopes
        if slopes is None or (start == 0 and n == slopes.numel()):
            return self
        view = self._head_views.get((start, n))
        if view is None:
            view = copy.copy(self)
            view._head_views = {}
            if self.attn_mask is not None and self.attn_mask.shape[1] > 1:
                view.attn_mask = self.attn_mask[:, start : start + n]
            if self.score_mod is not None:
                view.score_mod = _alibi_score_mod(self._spec, slopes[start : start + n])
            self._head_views[(start, n)] = view
        return view


def _alibi_score_mod(spec: MaskSpec, slopes: Tensor):
    """-slope * |pos_q - pos_k| as a FlexAttention score_mod.

    Positions shared by every row (the (1, T) default of training batches) are read from row 0:
    indexing them by the batch row `b` would run past their first dimension for any b > 0."""
    q_pos, k_pos = spec.q_pos, spec.k_pos
    shared = q_pos.shape[0] == 1 and k_pos.shape[0] == 1

    def score_mod(score, b, h, q_idx, kv_idx):
        row = 0 if shared else b
        dist = (q_pos[row, q_idx] - k_pos[row, kv_idx]).abs()
        return score - slopes[h] * dist

    return score_mod


def attend(q: Tensor, k: Tensor, v: Tensor, ctx: AttentionContext, training: bool) -> Tensor:
    """Scaled dot-product attention of q (B, nh, Tq, hs) over k, v (B, nh, Tk, hs)."""
    p = ctx.dropout if training else 0.0
    if ctx.impl == "sdpa":
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=ctx.attn_mask, dropout_p=p, is_causal=ctx.is_causal
        )
    if ctx.impl == "flex":
        from torch.nn.attention.flex_attention import flex_attention

        if p:
            raise ValueError("attention dropout is not supported with attn_impl=flex")
        return flex_attention(q, k, v, score_mod=ctx.score_mod, block_mask=ctx.block_mask)
    return reference_attention(q, k, v, ctx.attn_mask, p)


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout: float = 0.0
) -> Tensor:
    """Plain attention: scores + additive bias, softmax in float32 (the parity reference)."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, Tq, Tk)
    if attn_mask is not None:
        scores = scores + attn_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout:
        probs = F.dropout(probs, p=dropout)
    return probs @ v
