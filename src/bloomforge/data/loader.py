"""The training mixture loader: packed samples drawn from token shards by mixture weights.

In: a token folder written by `bloomforge data tokenize` (manifest.json + datatrove `.ds` shards),
the sequence length, mixture weights and a seed. Out: global batches of samples, each
`seq_len + 1` consecutive tokens of one group (documents packed back to back with EOS between
them); a rank takes its contiguous slice of every global batch. docs/loader.md has the details.

How samples are chosen, all deterministic from the seed, following Megatron-DeepSpeed (the
BigScience fork that trained BLOOM):
- Datasets are the (source, language) pairs; each dataset's documents (all its shards, in file
  order) are split into a training head and a validation tail with Megatron's rounding
  (`megatron/data/dataset_utils.py` `get_train_valid_test_split_`): round(95%) of the documents
  train, the rest validate (BLOOM tr11 held out 5% of every dataset).
- Groups are the mixing units: sources (`group_by="source"`, BLOOM's ratio file weighted its
  datasets) or languages (`group_by="language"`). A group's training documents are those of its
  datasets. Weights are explicit per group, or p_i ∝ tokens_i^alpha (alpha=1: natural proportions).
- Global sample g goes to the group whose share is furthest behind its weight (Megatron's
  `BlendableDataset` greedy assignment), so the mixture is exact at every prefix, not only in
  expectation.
- Within a group, each epoch is built as Megatron's `GPTDataset` builds one epoch
  (`megatron/data/gpt_dataset.py`): the documents are shuffled (`_build_doc_idx`), packed back to
  back into samples of seq_len + 1 tokens that overlap by one token (`_build_sample_idx`; the
  tail that does not fill a sample is dropped), and the samples are shuffled
  (`_build_shuffle_idx`). Epoch 0 draws from `np.random.RandomState(seed)` as Megatron does,
  epoch e > 0 from `RandomState([seed, e])`; an epoch's index is built when first needed.
- The validation tail of a group is read in document order by `validation_batches(group)`.

The state is the count of consumed samples per group, so `state_dict()` / `load_state_dict()`
resume exactly, and two ranks together see exactly the samples one rank alone would.
"""

from __future__ import annotations

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
    """Tokens held in pieces of memory-mapped shards, addressed as one array."""

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


@dataclass
class _Documents:
    """A group's training documents, as Megatron's indexed dataset holds them: document d is
    `stream[starts[d] : starts[d] + sizes[d]]`."""

    stream: _Stream
    sizes: np.ndarray  # (n_docs,) int64, tokens per document (EOS included)
    starts: np.ndarray  # (n_docs,) int64, offsets in stream

    @classmethod
    def of(cls, pieces: list[np.ndarray], sizes: list[np.ndarray]) -> _Documents:
        flat = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
        return cls(_Stream.of(pieces), flat, np.cumsum(flat) - flat)


@dataclass
class _Epoch:
    """One epoch of a group, Megatron's three indices (megatron/data/gpt_dataset.py)."""

    doc_idx: np.ndarray  # the documents in this epoch's order (_build_doc_idx)
    # Token end of each doc_idx entry in the packed epoch. Sample s starts at token s * seq_len;
    # searchsorted here gives Megatron's sample_idx[s] (doc_idx index, offset) without storing
    # one row per sample.
    ends: np.ndarray
    shuffle_idx: np.ndarray  # the samples in reading order (_build_shuffle_idx)


def train_valid_test_split(fractions: list[float], size: int) -> list[int]:
    """Document boundaries [0, train_end, valid_end, size] of a dataset of `size` documents.

    Transcribes Megatron-DeepSpeed's `get_train_valid_test_split_`
    (megatron/data/dataset_utils.py): cumulative int(round(fraction * size)), then every boundary
    shifted so the last equals `size`. For a train/valid pair this gives the same sizes as
    `get_split_by_range_` with "0:0.950" / "0.950:1.0", the ranges tr11-176B-ml used
    (bigscience data/catalogue/load_ratios_meg_ds_format.py, train/tr11-176B-ml/*.slurm).
    """
    splits = [*fractions, 0.0, 0.0, 0.0][:3]
    total = sum(splits)
    if total <= 0:
        raise BloomforgeError(f"split fractions {fractions} must have a positive sum")
    splits = [s / total for s in splits]
    index = [0]
    for s in splits:
        index.append(index[-1] + round(s * float(size)))  # Megatron: int(round(...))
    diff = index[-1] - size
    return [index[0], *(i - diff for i in index[1:])]


class Blend:
    """Which group each global sample comes from, as Megatron's `BlendableDataset` assigns it,
    and the state that resumes it: the samples drawn so far per group. Shared by the
    pretraining loader and the multitask finetuning loader (bloomforge.mtf.loader).

    Weights are explicit per group (`weights`, normalised) or p_i ~ size_i^alpha; `what` names
    the data in errors ("the token folder", "data.mtf")."""

    def __init__(
        self,
        groups: list[str],
        sizes: dict[str, float],
        weights: dict[str, float] | None,
        alpha: float,
        state_key: dict,
        what: str,
    ) -> None:
        self.groups, self.what = groups, what
        self.state_key = state_key  # settings a saved state must match (seed, seq_len)
        if weights:
            unknown = sorted(set(weights) - set(groups))
            if unknown:
                raise BloomforgeError(
                    f"data.weights: unknown group(s) {unknown}; {what} has {groups}"
                )
            raw = {g: float(weights.get(g, 0.0)) for g in groups}
        else:
            raw = {g: float(sizes[g]) ** alpha for g in groups}
        total = sum(raw.values())
        if any(v < 0 for v in raw.values()) or total <= 0:
            raise BloomforgeError("data.weights: weights must be >= 0 with a positive sum")
        self.weights = {g: v / total for g, v in raw.items()}
        self._w = [self.weights[g] for g in groups]
        self.counts = [0] * len(groups)
        self.consumed = 0

    def assign(self, n: int, advance: bool = True) -> list[tuple[int, int]]:
        """(group index, k-th sample of that group) for the next n global samples: each goes to
        the group furthest behind weight * samples so far (the first such group on ties, as
        numpy's argmax). `advance=False` only looks."""
        # Plain Python over a handful of groups: ~10x faster than numpy ops per sample.
        weights, counts, consumed = self._w, list(self.counts), self.consumed
        order = range(len(weights))
        out = []
        for _ in range(n):
            target = consumed + 1
            gi = max(order, key=lambda i: weights[i] * target - counts[i])
            out.append((gi, counts[gi]))
            counts[gi] += 1
            consumed += 1
        if advance:
            self.counts, self.consumed = counts, consumed
        return out

    def state_dict(self) -> dict:
        return {
            "consumed_samples": self.consumed,
            "group_counts": dict(zip(self.groups, self.counts, strict=True)),
            **self.state_key,
        }

    def load_state_dict(self, state: dict) -> None:
        if any(state.get(k) != v for k, v in self.state_key.items()):
            raise BloomforgeError(
                "loader state was saved with another seq_len or seed; cannot resume exactly"
            )
        counts = state["group_counts"]
        if sorted(counts) != self.groups:
            raise BloomforgeError(
                f"loader state groups {sorted(counts)} differ from {self.what}'s {self.groups}"
            )
        self.counts = [int(counts[g]) for g in self.groups]
        self.consumed = int(state["consumed_samples"])


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
        if not 0.0 <= valid_fraction < 1.0:
            raise BloomforgeError(f"data.valid_fraction {valid_fraction} must be in [0, 1)")
        # A dataset is one (source, language) pair: its shards in file order (manifest order).
        datasets: dict[tuple[str, str], list[Shard]] = {}
        for shard in self.manifest.shards:
            datasets.setdefault((shard.source, shard.language), []).append(shard)
        self.groups = sorted({src if group_by == "source" else lang for src, lang in datasets})
        train_pieces: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        train_sizes: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        valid_pieces: dict[str, list[np.ndarray]] = {g: [] for g in self.groups}
        for (source, language), members in datasets.items():
            group = source if group_by == "source" else language
            opened = [open_shard(self.manifest, shard) for shard in members]
            n_docs = sum(len(ends) for _, ends in opened)
            # BLOOM tr11: "0:0.950" train, "0.950:1.0" valid, per dataset, in document order.
            n_train = train_valid_test_split([1.0 - valid_fraction, valid_fraction], n_docs)[1]
            for toks, ends in opened:
                take = min(n_train, len(ends))  # this shard's documents that train
                n_train -= take
                split = int(ends[take - 1]) if take else 0
                train_pieces[group].append(toks[:split])
                train_sizes[group].append(np.diff(ends[:take].astype(np.int64), prepend=0))
                valid_pieces[group].append(toks[split:])
        self._train = {g: _Documents.of(train_pieces[g], train_sizes[g]) for g in self.groups}
        self._valid = {g: _Stream.of(p) for g, p in valid_pieces.items()}
        # megatron/data/gpt_dataset.py _num_epochs: (tokens - 1) // seq_len samples per epoch.
        self.samples_per_epoch = {
            g: max(0, (len(d.stream) - 1) // seq_len) for g, d in self._train.items()
        }
        empty = [g for g, n in self.samples_per_epoch.items() if n == 0]
        if empty:
            raise BloomforgeError(
                f"{self.manifest.root}: group(s) {empty} have fewer than {seq_len + 1} "
                "training tokens; lower data.seq_len or add text"
            )
        sizes = {g: len(self._train[g].stream) for g in self.groups}
        key = {"seed": seed, "seq_len": seq_len}
        self.blend = Blend(self.groups, sizes, weights, alpha, key, "the token folder")
        self.weights = self.blend.weights
        self._epochs: dict[int, tuple[int, _Epoch]] = {}  # group -> its current epoch

    @property
    def vocab_size(self) -> int:
        return self.manifest.vocab_size

    # -- state -------------------------------------------------------------------------------
    @property
    def consumed_samples(self) -> int:
        return self.blend.consumed

    def state_dict(self) -> dict:
        return self.blend.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.blend.load_state_dict(state)

    # -- sampling ----------------------------------------------------------------------------
    def _epoch(self, gi: int, epoch: int) -> _Epoch:
        cached = self._epochs.get(gi)
        if cached is None or cached[0] != epoch:
            cached = (epoch, self._build_epoch(gi, epoch))
            self._epochs[gi] = cached  # a group's samples are read in order: one epoch at a time
        return cached[1]

    def _build_epoch(self, gi: int, epoch: int) -> _Epoch:
        """Megatron's _build_index_mappings (megatron/data/gpt_dataset.py) for one epoch."""
        docs = self._train[self.groups[gi]]
        seed = self.seed % 2**32
        # Epoch 0 is Megatron's own RandomState(seed); later epochs get their own stream.
        rng = np.random.RandomState(seed if epoch == 0 else [seed, epoch])
        # _build_doc_idx with num_epochs=1: every training document once, shuffled.
        n_docs = len(docs.sizes)
        doc_idx = np.arange(n_docs, dtype=np.int32 if n_docs < 2**31 else np.int64)
        rng.shuffle(doc_idx)
        # _build_sample_idx: documents packed back to back in doc_idx order; sample s is tokens
        # [s * seq_len, (s + 1) * seq_len] of that packing, its last token the next one's first.
        ends = np.cumsum(docs.sizes[doc_idx])
        # _build_shuffle_idx: the samples in a random order (the same rng, after doc_idx).
        n = self.samples_per_epoch[self.groups[gi]]
        shuffle_idx = np.arange(n, dtype=np.uint32 if n < 2**32 - 1 else np.int64)
        rng.shuffle(shuffle_idx)
        return _Epoch(doc_idx, ends, shuffle_idx)

    def _sample(self, gi: int, k: int) -> np.ndarray:
        """The k-th sample of group gi: sample k % n of epoch k // n."""
        docs = self._train[self.groups[gi]]
        n = self.samples_per_epoch[self.groups[gi]]
        ep = self._epoch(gi, k // n)
        begin = int(ep.shuffle_idx[k % n]) * self.seq_len
        i = int(np.searchsorted(ep.ends, begin, side="right"))  # sample_idx: (doc_idx index,
        offset = begin - (int(ep.ends[i - 1]) if i else 0)  # offset in that document)
        # GPTDataset.__getitem__: the rest of the first document, whole ones, part of the last.
        out = np.empty(self.seq_len + 1, dtype=np.int64)
        filled = 0
        while filled < len(out):
            d = int(ep.doc_idx[i])
            take = min(len(out) - filled, int(docs.sizes[d]) - offset)
            out[filled : filled + take] = docs.stream.window(int(docs.starts[d]) + offset, take)
            filled += take
            i += 1
            offset = 0
        return out

    def next_batch(
        self, global_batch_size: int, rank: int = 0, world_size: int = 1
    ) -> torch.Tensor:
        """This rank's slice (global_batch_size // world_size, seq_len + 1) of the next batch."""
        if global_batch_size % world_size:
            raise BloomforgeError(
                f"global batch {global_batch_size} is not divisible by {world_size} ranks"
            )
        assigned = self.blend.assign(global_batch_size)
        per_rank = global_batch_size // world_size
        mine = assigned[rank * per_rank : (rank + 1) * per_rank]
        return torch.from_numpy(np.stack([self._sample(gi, k) for gi, k in mine]))

    def group_of_next(self, n: int) -> list[str]:
        """Groups of the next n samples without consuming them (for inspection and tests)."""
        return [self.groups[gi] for gi, _ in self.blend.assign(n, advance=False)]

    # -- validation --------------------------------------------------------------------------
    def validation_tokens(self, group: str) -> int:
        return len(self._valid[group])

    def validation_batches(
        self, group: str, batch_size: int, max_samples: int | None = None
    ) -> Iterator[torch.Tensor]:
        """Held-out samples of one group in document order (seq_len + 1 tokens each, one token
        shared with the next, as training samples), batched."""
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
