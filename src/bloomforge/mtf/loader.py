"""The multitask finetuning loader: xP3 `{inputs, targets}` records packed into training rows.

In: a folder of xP3-style jsonl (`bloomforge mtf build` output, or your own: any `*.jsonl` below
the folder), a tokenizer, the sequence length, mixture weights and a seed. Out: global batches
of `PackedRows` (token ids, segment ids, input flags; seq_len + 1 columns), a rank's contiguous
slice of each, and held-out rows per language.

As BLOOMZ was finetuned (bigscience-workshop/Megatron-DeepSpeed, `finetune_t0.py` with
`megatron/data/decoder_packed_mtf_dataset.py`; the runs in bigscience train/tr13-mtf/):
- a sample is its input tokens then its target tokens, tokenized apart; the target gets a
  leading space and a closing `</s>` (the BLOOMZ data was made with Megatron-DeepSpeed's
  `tools/preprocess_data.py`, targets with `--prepend-space --append-eod`, inputs without);
- each language is one dataset, 95% train and 5% validation ("0:0.950" in xmtf's
  xp3capmixnewcodelong_train.txt; the held-out records are a seeded draw, not the file's tail
  as in Megatron, since a language file holds its datasets one after another); languages are
  blended row by row by weight (Megatron's `BlendableDataset`, as `bloomforge.data.loader`
  blends pretraining data);
- within a language, every epoch shuffles the samples with one `RandomState(seed)` stream
  (`_build_shuffle_idx`) and packs them greedily, in that order, into rows of seq_len + 1 tokens
  (`_build_sample_idx`, a partly filled row carried into the next epoch); a sample longer than
  a row is skipped and counted; the rest of a row is padding (segment 0);
- segment ids number the samples of a row from 1 (`pack_samples`).

Where a record cannot be used (not JSON, `inputs`/`targets` missing, not text, or empty) it is
counted with its reason and set aside; `skipped` holds the counts and the first places.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bloomforge.data.loader import Blend, train_valid_test_split
from bloomforge.errors import BloomforgeError

log = logging.getLogger(__name__)

EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
_PLACES = 3  # file:line places kept per skip reason
_SPLIT_STREAM = 0x5350  # the held-out draw's own random stream


@dataclass
class PackedRows:
    """Rows of packed samples, each seq_len + 1 columns (inputs are [:, :-1], labels [:, 1:])."""

    tokens: torch.Tensor  # (B, T+1) long
    segment_ids: torch.Tensor  # (B, T+1) long: 1, 2, ... per sample; 0 is padding
    is_input: torch.Tensor  # (B, T+1) bool: the token belongs to its sample's input

    @property
    def shape(self) -> torch.Size:
        return self.tokens.shape

    @property
    def real_tokens(self) -> int:
        """Tokens that are not padding."""
        return int((self.segment_ids != 0).sum())


@dataclass
class _Samples:
    """One language's tokenized samples: sample i is tokens[starts[i]:starts[i+1]], of which the
    first n_input[i] are its input."""

    tokens: np.ndarray
    starts: np.ndarray
    n_input: np.ndarray

    def __len__(self) -> int:
        return len(self.n_input)

    def sizes(self) -> np.ndarray:
        return np.diff(self.starts)

    def take(self, index: np.ndarray) -> _Samples:
        """The samples at `index`, in that order."""
        sizes = self.sizes()[index]
        starts = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(sizes, out=starts[1:])
        pieces = [self.tokens[self.starts[i] : self.starts[i + 1]] for i in index]
        tokens = np.concatenate(pieces) if pieces else self.tokens[:0]
        return _Samples(tokens, starts, self.n_input[index])


@dataclass
class Skipped:
    counts: Counter = field(default_factory=Counter)
    places: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, place: str) -> None:
        self.counts[reason] += 1
        self.places.setdefault(reason, [])
        if len(self.places[reason]) < _PLACES:
            self.places[reason].append(place)

    def summary(self) -> str:
        return "; ".join(
            f"{n} {reason} (e.g. {', '.join(self.places[reason])})"
            for reason, n in self.counts.most_common()
        )


def mtf_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise BloomforgeError(f"data.mtf={root}: no such folder (run `bloomforge mtf build`)")
    files = sorted(p for p in root.rglob("*.jsonl") if p.is_file())
    if not files:
        raise BloomforgeError(f"data.mtf={root}: no *.jsonl files (xP3 records) below it")
    return files


def _language(record: dict, file: Path, root: Path) -> str:
    """The record's `language`, else its folder below the root (xP3's `fr/xp3_*.jsonl`), else
    the file name (`bloomforge mtf build` writes `fr.jsonl`)."""
    lang = record.get("language")
    if isinstance(lang, str) and lang:
        return lang
    if root.is_dir() and file.parent != root:
        return file.parent.name
    return file.stem


def read_mtf(root: str | Path, tokenizer, skipped: Skipped) -> dict[str, _Samples]:
    """Tokenize every usable record of the folder, per language, in file and line order."""
    root = Path(root)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    if eos is None:
        raise BloomforgeError(f"the tokenizer has no {EOS_TOKEN} token to close the targets")
    texts: dict[str, tuple[list[str], list[str]]] = {}
    for file in mtf_files(root):
        with open(file, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                place = f"{file}:{n}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    skipped.add("not valid JSON", place)
                    continue
                if not isinstance(record, dict):
                    skipped.add("not a JSON object", place)
                    continue
                inputs, targets = record.get("inputs"), record.get("targets")
                if inputs is None or targets is None:
                    skipped.add("no 'inputs' or 'targets'", place)
                    continue
                if not (isinstance(inputs, str) and isinstance(targets, str)):
                    skipped.add("'inputs' or 'targets' not text", place)
                    continue
                if not inputs.strip() or not targets.strip():
                    skipped.add("empty 'inputs' or 'targets'", place)
                    continue
                ins, tgts = texts.setdefault(_language(record, file, root), ([], []))
                ins.append(inputs)
                tgts.append(" " + targets)
    out = {}
    for lang in sorted(texts):
        ins, tgts = texts[lang]
        enc_in = tokenizer.encode_batch(ins, add_special_tokens=False)
        enc_tg = tokenizer.encode_batch(tgts, add_special_tokens=False)
        pieces, n_input = [], []
        for a, b in zip(enc_in, enc_tg, strict=True):
            pieces.append(np.asarray([*a.ids, *b.ids, eos], dtype=np.int32))
            n_input.append(len(a.ids))
        starts = np.zeros(len(pieces) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in pieces], out=starts[1:])
        out[lang] = _Samples(np.concatenate(pieces), starts, np.asarray(n_input, dtype=np.int64))
    if not out:
        raise BloomforgeError(f"data.mtf={root}: no usable record ({skipped.summary()})")
    return out


def pack_rows(samples: _Samples, groups: list[np.ndarray], row_len: int, pad_id: int) -> PackedRows:
    """Megatron's `pack_samples`: each group of sample indices back to back in one row."""
    tokens = np.full((len(groups), row_len), pad_id, dtype=np.int64)
    segments = np.zeros((len(groups), row_len), dtype=np.int64)
    is_input = np.zeros((len(groups), row_len), dtype=bool)
    for r, group in enumerate(groups):
        cur = 0
        for seg, i in enumerate(group, 1):
            a, b = int(samples.starts[i]), int(samples.starts[i + 1])
            n = b - a
            if cur + n > row_len:
                raise ValueError(f"samples {list(group)} do not fit in a row of {row_len}")
            tokens[r, cur : cur + n] = samples.tokens[a:b]
            segments[r, cur : cur + n] = seg
            is_input[r, cur : cur + int(samples.n_input[i])] = True
            cur += n
    return PackedRows(
        torch.from_numpy(tokens), torch.from_numpy(segments), torch.from_numpy(is_input)
    )


class _Packing:
    """One language's training rows, built epoch by epoch as Megatron's `_build_index_mappings`
    (decoder_packed_mtf_dataset.py): rows are [start, end) ranges of the concatenated epochs'
    shuffled sample order."""

    def __init__(self, sizes: np.ndarray, row_len: int, seed: int) -> None:
        self.sizes, self.row_len = sizes, row_len
        self.rng = np.random.RandomState(seed % 2**32)
        self.order: list[np.ndarray] = []  # shuffle_idx, one array per epoch
        self.rows: list[tuple[int, int]] = []
        self.row_length = 0  # tokens of the unfinished row carried into the next epoch
        self.start = 0  # where the unfinished row starts
        self.too_long = 0

    def _next_epoch(self) -> None:
        epoch = len(self.order)
        ids = np.arange(len(self.sizes), dtype=np.int64)
        self.rng.shuffle(ids)  # _build_shuffle_idx
        self.order.append(ids)
        offset = epoch * len(ids)
        for pos, sample in enumerate(ids):  # _build_sample_idx
            end = offset + pos
            n = int(self.sizes[sample])
            self.row_length += n
            if self.row_length > self.row_len:
                if end > self.start:
                    self.rows.append((self.start, end))
                self.start, self.row_length = end, n
                if n > self.row_len:
                    if epoch == 0:
                        self.too_long += 1
                    self.start, self.row_length = end + 1, 0

    def row(self, k: int) -> np.ndarray:
        """The sample indices of row k."""
        while len(self.rows) <= k:
            self._next_epoch()
        a, b = self.rows[k]
        n = len(self.sizes)
        return np.asarray([self.order[i // n][i % n] for i in range(a, b)], dtype=np.int64)


class _BestFitPacking:
    """One language's training rows packed tighter than Megatron does (`data.packing:
    best_fit`): each epoch's shuffled samples are taken in windows of WINDOW, longest first,
    and each goes into the first row of its window with room left (first-fit decreasing).
    Rows come out in the order they were opened; a sample longer than a row is skipped."""

    WINDOW = 1024

    def __init__(self, sizes: np.ndarray, row_len: int, seed: int) -> None:
        self.sizes, self.row_len = sizes, row_len
        self.rng = np.random.RandomState(seed % 2**32)
        self.order: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.too_long = 0

    def _next_epoch(self) -> None:
        ids = np.arange(len(self.sizes), dtype=np.int64)
        self.rng.shuffle(ids)
        self.order.append(ids)
        fits = ids[self.sizes[ids] <= self.row_len]
        if len(self.order) == 1:
            self.too_long = len(ids) - len(fits)
        for start in range(0, len(fits), self.WINDOW):
            window = fits[start : start + self.WINDOW]
            window = window[np.argsort(-self.sizes[window], kind="stable")]
            bins: list[list[int]] = []
            free: list[int] = []
            for i in window.tolist():
                n = int(self.sizes[i])
                for b, room in enumerate(free):
                    if n <= room:
                        bins[b].append(i)
                        free[b] -= n
                        break
                else:
                    bins.append([i])
                    free.append(self.row_len - n)
            self.rows += [np.asarray(b, dtype=np.int64) for b in bins]

    def row(self, k: int) -> np.ndarray:
        while len(self.rows) <= k:
            self._next_epoch()
        return self.rows[k]


class MTFLoader:
    """Packed xP3 rows, blended across languages; the interface of `MixtureLoader`."""

    def __init__(
        self,
        root: str | Path,
        tokenizer,
        seq_len: int,
        *,
        seed: int = 1234,
        weights: dict[str, float] | None = None,
        alpha: float = 1.0,
        valid_fraction: float = 0.05,
        packing: str = "megatron",
    ) -> None:
        self.root, self.seq_len, self.seed = Path(root), seq_len, seed
        self.row_len = seq_len + 1
        self.vocab_size = tokenizer.get_vocab_size()
        pad = tokenizer.token_to_id(PAD_TOKEN)
        self.pad_id = pad if pad is not None else tokenizer.token_to_id(EOS_TOKEN)
        self.skipped = Skipped()
        samples = read_mtf(self.root, tokenizer, self.skipped)
        if self.skipped.counts:
            log.warning("data.mtf: set aside %s", self.skipped.summary())
        self.groups = sorted(samples)
        self._train: dict[str, _Samples] = {}
        self._valid: dict[str, _Samples] = {}
        for lang, s in samples.items():
            n_train = train_valid_test_split([1.0 - valid_fraction, valid_fraction], len(s))[1]
            if n_train == 0:
                raise BloomforgeError(f"data.mtf: language '{lang}' has no training sample")
            # Megatron splits a dataset by position; a language file holds its datasets one
            # after the other, so the held-out part is a seeded draw instead of the tail.
            order = np.random.RandomState([seed % 2**32, _SPLIT_STREAM]).permutation(len(s))
            self._train[lang] = s.take(np.sort(order[:n_train]))
            self._valid[lang] = s.take(np.sort(order[n_train:]))
            if int(self._train[lang].sizes().min()) > self.row_len:
                raise BloomforgeError(
                    f"data.mtf: no training sample of '{lang}' fits in data.seq_len={seq_len} "
                    "(+1) tokens; raise data.seq_len"
                )
        if packing not in ("megatron", "best_fit"):
            raise BloomforgeError(f"data.packing={packing}: expected megatron or best_fit")
        kind = _Packing if packing == "megatron" else _BestFitPacking
        self._packing = {g: kind(self._train[g].sizes(), self.row_len, seed) for g in self.groups}
        sizes = {g: len(self._train[g].tokens) for g in self.groups}
        key = {"seed": seed, "seq_len": seq_len}
        # each language's share of the tokens at alpha 1, as xP3's mixture file weighted them
        self.blend = Blend(self.groups, sizes, weights, alpha, key, "data.mtf")
        self.weights = self.blend.weights

    # -- facts -------------------------------------------------------------------------------
    def samples(self, group: str, split: str = "train") -> int:
        return len((self._train if split == "train" else self._valid)[group])

    def tokens(self, group: str, split: str = "train") -> int:
        return len((self._train if split == "train" else self._valid)[group].tokens)

    def too_long(self) -> dict[str, int]:
        """Training samples per language longer than a row (skipped), counted in epoch 0."""
        for p in self._packing.values():
            if not p.order:
                p._next_epoch()
        return {g: self._packing[g].too_long for g in self.groups}

    # -- state -------------------------------------------------------------------------------
    @property
    def consumed_samples(self) -> int:
        return self.blend.consumed

    def state_dict(self) -> dict:
        return self.blend.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.blend.load_state_dict(state)

    # -- rows --------------------------------------------------------------------------------
    def next_batch(self, global_batch_size: int, rank: int = 0, world_size: int = 1) -> PackedRows:
        """This rank's slice (global_batch_size // world_size rows) of the next global batch."""
        if global_batch_size % world_size:
            raise BloomforgeError(
                f"global batch {global_batch_size} is not divisible by {world_size} ranks"
            )
        assigned = self.blend.assign(global_batch_size)
        per_rank = global_batch_size // world_size
        mine = assigned[rank * per_rank : (rank + 1) * per_rank]
        parts = []
        for gi, k in mine:
            g = self.groups[gi]
            parts.append(
                pack_rows(self._train[g], [self._packing[g].row(k)], self.row_len, self.pad_id)
            )
        return _stack(parts)

    def validation_batches(
        self, group: str, batch_size: int, max_samples: int | None = None
    ) -> Iterator[PackedRows]:
        """The language's held-out samples in order, packed greedily, batch_size rows at a time
        (max_samples: at most that many rows)."""
        valid = self._valid[group]
        rows, cur, n = [], [], 0
        for i, size in enumerate(valid.sizes()):
            if size > self.row_len:
                continue
            if n + size > self.row_len:
                rows.append(np.asarray(cur))
                cur, n = [], 0
            cur.append(i)
            n += int(size)
        if cur:
            rows.append(np.asarray(cur))
        if max_samples is not None:
            rows = rows[:max_samples]
        for start in range(0, len(rows), batch_size):
            yield pack_rows(valid, rows[start : start + batch_size], self.row_len, self.pad_id)


def _stack(parts: list[PackedRows]) -> PackedRows:
    return PackedRows(
        torch.cat([p.tokens for p in parts]),
        torch.cat([p.segment_ids for p in parts]),
        torch.cat([p.is_input for p in parts]),
    )
