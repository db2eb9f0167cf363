"""The training mixture loader: packed samples drawn from token shards by mixture weights.

In: a token folder written by `bloomforge data tokenize` (manifest.json + datatrove `.ds` shards),
the sequence length, mixture weights and a seed. Out: global batches of samples, each
`seq_len + 1` consecutive tokens of one group (documents packed back to back with EOS between
them, as Megatron's GPT dataset does); a rank takes its contiguous slice of every global batch.

How samples are chosen, all deterministic from the seed:
- Groups are the mixing units: sources (`group_by="source"`, BLOOM's ratio file weighted its
  datasets) or languages (`group_by="language"`). Weights are explicit per group, or
  p_i ∝ tokens_i^alpha (alpha=1: natural proportions).
- Global sample g goes to the group whose share is furthest behind its weight (Megatron's
  `BlendableDataset` greedy assignment), so the mixture is exact at every prefix, not only in
  expectation.
- Within a group, samples are the windows [k*seq_len, k*seq_len + seq_len + 1) of its training
  tokens, visited in a fresh seeded permutation each epoch.
- 5% of each shard's documents (its last ones; BLOOM held out 5% of each dataset) are held out
  for validation, read in order by `validation_batches(group)`.

The state is the count of consumed samples per group, so `state_dict()` / `load_state_dict()`
resume exactly, and two ranks together see exactly the samples one rank alone would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bloomforge.data.shards import Manifest, Shard, open_shard, read_manifest
from bloomforge.errors import BloomforgeError

VALID_FRACTION = 0.05  # BLOOM: 5% of every dataset held out


@dataclass
class _Stream:
    """The tokens of one group: pieces of memory-mapped shards, addressed as one array."""

    pieces: list[np.ndarray]
    starts: np.ndarray  # (len(pieces)+1,) cumulative offsets

    @classmethod
    def of(cls, pieces: list[np.ndarray]) -> _Stream:
        pieces = [p for p in pieces if len(p)]
        starts = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=starts[1:])
        return cls(pieces, starts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def window(self, begin: int, length: int) -> np.ndarray:
        out = np.empty(length, dtype=np.int64)
        filled = 0
        i = int(np.searchsorted(self.starts, begin, side="right")) - 1
        while filled < length:
            piece, offset = self.pieces[i], begin + filled - int(self.starts[i])
            take = min(length - filled, len(piece) - offset)
            out[filled : filled + take] = piece[offset : offset + take]
            filled += take
            i += 1
        return out


def _split_point(ends: np.ndarray, fraction: float) -> int:
    """Token offset where the last `fraction` of the shard's documents start (>= 1 doc kept)."""
    n_docs = len(ends)
    n_valid = math.ceil(n_docs * fraction) if n_docs > 1 else 0
    n_train = n_docs - n_valid
    return int(ends[n_train - 1]) if n_train > 0 else 0


class MixtureLoader:
    def __init__(
        self,
        tokens: str | Path,
        seq_len: int,
        *,
        seed: int = 1234,
        group_by: Literal["source", "language"] = "source",
        weights: dict[str, float] | None = None,
        alpha: float = 1.0,
        valid_fraction: float = VALID_FRACTION,
    ) -> None:
        self.manifest: Manifest = read_manifest(tokens)
        self.seq_len = seq_len
        self.seed = seed
        shards: dict[str, list[Shard]] = {}
        for shard in self.manifest.shards:
            key = shard.source if group_by == "source" else shard.language
            shards.setdefault(key, []).append(shard)
        self.groups = sorted(shards)
        train_pieces: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        valid_pieces: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        for group, members in shards.items():
            for shard in members:
                toks, ends = open_shard(self.manifest, shard)
                split = _split_point(ends, valid_fraction)
                train_pieces[group].append(toks[:split])
                valid_pieces[group].append(toks[split:])
        self._train = {g: _Stream.of(p) for g, p in train_pieces.items()}
        self._valid = {g: _Stream.of(p) for g, p in valid_pieces.items()}
        self.samples_per_epoch = {
            g: max(0, (len(s) - 1) // seq_len) for g, s in self._train.items()
        }
        empty = [g for g, n in self.samples_per_epoch.items() if n == 0]
        if empty:
            raise BloomforgeError(
                f"{self.manifest.root}: group(s) {empty} have fewer than {seq_len + 1} "
                "training tokens; lower data.seq_len or add text"
            )
        self.weights = self._mixture(weights, alpha)
        self._w = np.array([self.weights[g] for g in self.groups])
        self._counts = np.zeros(len(self.groups), dtype=np.int64)
        self._consumed = 0
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}

    def _mixture(self, weights: dict[str, float] | None, alpha: float) -> dict[str, float]:
        if weights:
            unknown = sorted(set(weights) - set(self.groups))
            if unknown:
                raise BloomforgeError(
                    f"data.weights: unknown group(s) {unknown}; the token folder has {self.groups}"
                )
            raw = {g: float(weights.get(g, 0.0)) for g in self.groups}
        else:
            raw = {g: float(len(self._train[g])) ** alpha for g in self.groups}
        if any(v < 0 for v in raw.values()) or sum(raw.values()) <= 0:
            raise BloomforgeError("data.weights: weights must be >= 0 with a positive sum")
        total = sum(raw.values())
        return {g: v / total for g, v in raw.items()}

    # -- state -------------------------------------------------------------------------------
    @property
    def consumed_samples(self) -> int:
        return self._consumed

    def state_dict(self) -> dict:
        return {
            "consumed_samples": self._consumed,
            "group_counts": {g: int(c) for g, c in zip(self.groups, self._counts, strict=True)},
            "seed": self.seed,
            "seq_len": self.seq_len,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("seq_len") != self.seq_len or state.get("seed") != self.seed:
            raise BloomforgeError(
                "loader state was saved with another seq_len or seed; cannot resume exactly"
            )
        counts = state["group_counts"]
        if sorted(counts) != self.groups:
            raise BloomforgeError(
                f"loader state groups {sorted(counts)} differ from the token folder's {self.groups}"
            )
        self._counts = np.array([counts[g] for g in self.groups], dtype=np.int64)
        self._consumed = int(state["consumed_samples"])

    # -- sampling ----------------------------------------------------------------------------
    def _assign(self, n: int) -> list[tuple[int, int]]:
        """(group index, k-th sample of that group) for the next n global samples."""
        # Plain Python over a handful of groups: ~10x faster than numpy ops per sample.
        weights, counts = self._w.tolist(), self._counts.tolist()
        order = range(len(weights))
        consumed, out = self._consumed, []
        for _ in range(n):
            # Megatron BlendableDataset: pick the group furthest behind weight * samples so far
            # (the first such group on ties, as numpy's argmax).
            target = consumed + 1
            gi = max(order, key=lambda i: weights[i] * target - counts[i])
            out.append((gi, counts[gi]))
            counts[gi] += 1
            consumed += 1
        self._counts = np.array(counts, dtype=np.int64)
        self._consumed = consumed
        return out

    def _permutation(self, gi: int, epoch: int) -> np.ndarray:
        key = (gi, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.groups):
                self._perm_cache.clear()
            n = self.samples_per_epoch[self.groups[gi]]
            rng = np.random.default_rng([self.seed, gi, epoch])
            self._perm_cache[key] = rng.permutation(n)
        return self._perm_cache[key]

    def _sample(self, gi: int, k: int) -> np.ndarray:
        n = self.samples_per_epoch[self.groups[gi]]
        idx = int(self._permutation(gi, k // n)[k % n])
        return self._train[self.groups[gi]].window(idx * self.seq_len, self.seq_len + 1)

    def next_batch(
        self, global_batch_size: int, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
        """This rank's slice (global_batch_size // world_size, seq_len + 1) of the next batch."""
        if global_batch_size % world_size:
            raise BloomforgeError(
                f"global batch {global_batch_size} is not divisible by {world_size} ranks"
            )
        assigned = self._assign(global_batch_size)
        per_rank = global_batch_size // world_size
        mine = assigned[rank * per_rank : (rank + 1) * per_rank]
        return torch.from_numpy(np.stack([self._sample(gi, k) for gi, k in mine]))

    def group_of_next(self, n: int) -> list[str]:
        """Groups of the next n samples without consuming them (for inspection and tests)."""
        counts, consumed = self._counts.copy(), self._consumed
        try:
            return [self.groups[gi] for gi, _ in self._assign(n)]
        finally:
            self._counts, self._consumed = counts, consumed

    # -- validation --------------------------------------------------------------------------
    def validation_tokens(self, group: str) -> int:
        return len(self._valid[group])

    def validation_batches(
        self, group: str, batch_size: int, max_samples: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Held-out windows of one group in order, non-overlapping, batched."""
        stream = self._valid[group]
        n = max(0, (len(stream) - 1) // self.seq_len)
        if max_samples is not None:
            n = min(n, max_samples)
        for start in range(0, n, batch_size):
            rows = [
                stream.window(k * self.seq_len, self.seq_len + 1)
                for k in range(start, min(n, start + batch_size))
            ]
            yield torch.from_numpy(np.stack(rows))
