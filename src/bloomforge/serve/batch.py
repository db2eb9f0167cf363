"""The running batch of continuous batching: rows that decode together over one shared KV cache.

In: prefilled rows (their keys/values, padding mask and first sampled token). Out: one decode
step at a time for every row (`step`), rows leaving (`keep`) and joining (`join`) between steps.

Every row ends at the same cache column, so rows of different lengths are left-padded; the
padding columns are masked out and positions count real tokens only (`BloomLM` derives them
from the attention mask), so a row's ALiBi distances, learned or rotary positions are the ones
it would have alone. Joining pads the narrower side on the left; leaving drops the rows and the
leading columns no remaining row uses. (vLLM pages its cache instead; a dense cache with
copies on join and leave is enough for the batch sizes served here.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from bloomforge.model.bloom import BloomLM, KVCache


def cache_view(k: Tensor, v: Tensor, length: int) -> KVCache:
    """A `KVCache` over existing tensors (n_layer, B, nh, capacity, hs) holding `length` columns."""
    cache = KVCache.__new__(KVCache)
    cache.k, cache.v, cache.length = k, v, length
    return cache


class RunningBatch:
    def __init__(self, model: BloomLM) -> None:
        self.model = model
        self.k: Tensor | None = None  # (n_layer, B, nh, capacity, hs)
        self.v: Tensor | None = None
        self.mask: Tensor | None = None  # (B, length) long: 1 token, 0 left padding
        self.last: Tensor | None = None  # (B,) the newest token of each row, fed next step
        self.length = 0

    @property
    def size(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @torch.no_grad()
    def step(self) -> Tensor:
        """One decode step for every row: hidden states (B, h) of the newest tokens."""
        assert self.k is not None and self.v is not None and self.mask is not None
        assert self.last is not None
        mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        cache = cache_view(self.k, self.v, self.length)
        hidden = self.model(
            self.last[:, None], attention_mask=mask, cache=cache, return_hidden=True
        )  # (B, 1, h); prefix-LM: the new column is causal, every cached column precedes it
        self.mask, self.length = mask, self.length + 1
        return hidden[:, -1]

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order); drop the leading columns none of them uses."""
        if not rows:
            self.k = self.v = self.mask = self.last = None
            self.length = 0
            return
        assert self.k is not None and self.v is not None and self.mask is not None
        assert self.last is not None
        if rows != list(range(self.size)):
            idx = torch.tensor(rows, device=self.mask.device)
            self.k, self.v = self.k.index_select(1, idx), self.v.index_select(1, idx)
            self.mask, self.last = self.mask.index_select(0, idx), self.last.index_select(0, idx)
        first = int(self.mask.any(dim=0).long().argmax())  # first column some row uses
        if first:
            self.k, self.v = self.k[:, :, :, first:], self.v[:, :, :, first:]
            self.mask, self.length = self.mask[:, first:], self.length - first

    def join(self, k: Tensor, v: Tensor, mask: Tensor, last: Tensor, room: int) -> None:
        """Append prefilled rows: k, v (n_layer, n, nh, P, hs), mask (n, P), last (n,); `room`:
        the most decode steps any row (old or new) may still take."""
        P = mask.shape[1]
        if self.size == 0:
            old_k = old_v = None
            L, W = 0, P
        else:
            assert self.k is not None and self.v is not None and self.mask is not None
            old_k, old_v, L = self.k, self.v, self.length
            W = max(L, P)
        n_layer, n, nh, _, hs = k.shape
        B = self.size + n
        shape = (n_layer, B, nh, W + room, hs)
        new_k = torch.zeros(shape, dtype=k.dtype, device=k.device)
        new_v = torch.zeros_like(new_k)
        new_mask = torch.zeros((B, W), dtype=mask.dtype, device=mask.device)
        b = self.size
        if old_k is not None and old_v is not None and self.mask is not None:
            new_k[:, :b, :, W - L : W] = old_k[:, :, :, :L]
            new_v[:, :b, :, W - L : W] = old_v[:, :, :, :L]
            new_mask[:b, W - L :] = self.mask
        new_k[:, b:, :, W - P : W] = k[:, :, :, :P]
        new_v[:, b:, :, W - P : W] = v[:, :, :, :P]
        new_mask[b:, W - P :] = mask
        self.k, self.v, self.mask, self.length = new_k, new_v, new_mask, W
        self.last = last if self.last is None or b == 0 else torch.cat([self.last, last])
