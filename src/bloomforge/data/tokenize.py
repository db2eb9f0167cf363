"""`bloomforge data tokenize`: documents -> memory-mapped token shards in datatrove's format.

In: a tokenizer (`tokenizer.json` or a folder with one) and input specs as `documents.inputs`
reads them (`[LANG=]PATH`: txt, jsonl, prepared output; gz/zst). Out: a folder

    manifest.json               written last; its presence means the folder is complete
    tokenizer.json              copy of the tokenizer used
    <src>/<lang>/<part>.ds      little-endian token ids, uint16 (vocab <= 65536) or uint32
    <src>/<lang>/<part>.ds.index     uint64 document end offsets (exclusive, cumulative)
    <src>/<lang>/<part>.ds.metadata  datatrove's "<tokenizer>|<token size>", token count

Each document is encoded without special tokens and followed by one EOS (`</s>`); a document lies
wholly inside one shard. The .ds/.index/.metadata files are written by datatrove's own
`TokenizedFile`, so `datatrove.utils.dataset.DatatroveFolderDataset` reads them back. The whole
folder is built under a temporary name and renamed at the end (`bloomforge.files`).

Speed: the main thread reads documents and writes shards while `workers` threads encode batches
with `Tokenizer.encode_batch_fast` (the Rust call releases the GIL). Rust's own thread pool is
switched off for the duration (TOKENIZERS_PARALLELISM=false) so that `workers` is the real
parallelism: Rayon's pool size is fixed at its first use in a process, our threads are not. On 2
cores this ran as fast as encoding on the Rayon pool from one thread (within noise) and as
`encode_batch` alone on texts in memory (bench/tokenize_speed.py).
Batches are consumed in submission order, so the output is byte-identical for any worker count.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomforge import files
from bloomforge.documents.inputs import Document, ReadStats, parse_inputs, read_documents
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.tokenizer.io import find_tokenizer_file, load_tokenizer

EOS_TOKEN = "</s>"  # BLOOM's EOS (bigscience/tokenizer: id 2)
FORMAT, VERSION = "datatrove-ds", 1
DEFAULT_SHARD_TOKENS = 2**28  # 512 MiB of uint16 per shard: large files, few of them
BATCH_DOCS, BATCH_BYTES = 2048, 1 << 20  # a batch ends at whichever comes first
MAX_OPEN = 128  # shards open at once; past it the least recently written one is closed
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _Batch:
    keys: list[tuple[str, str]]  # (source, language) per document
    texts: list[str]
    nbytes: list[int]


def token_size_for(vocab_size: int) -> int:
    """Bytes per token id: 2 when every id fits uint16, else 4 (datatrove's rule)."""
    if vocab_size <= 1 << 16:
        return 2
    if vocab_size <= 1 << 32:
        return 4
    raise BloomforgeError(f"tokenizer has {vocab_size} tokens: ids do not fit in uint32")


def safe_segment(name: str) -> str:
    """A folder name made of [A-Za-z0-9._-] only, never empty, never starting with a dot."""
    seg = _SAFE.sub("_", name).lstrip(".")
    return seg or "_"


def tokenize_corpus(
    tokenizer: str | Path,
    inputs: Sequence[str],
    out: str | Path,
    workers: int | None = None,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    progress: bool = False,
) -> dict:
    """Tokenize `inputs` into shards under `out`; return the manifest (as in manifest.json)."""
    t0 = time.perf_counter()
    workers = workers or _cpu_count()
    if workers < 1:
        raise BloomforgeError(f"--workers must be >= 1 (got {workers})")
    if shard_tokens < 1:
        raise BloomforgeError(f"--shard-tokens must be >= 1 (got {shard_tokens})")
    tok = load_tokenizer(tokenizer)
    tok_file = find_tokenizer_file(tokenizer)
    eos_id = tok.token_to_id(EOS_TOKEN)
    if eos_id is None:
        raise BloomforgeError(f"{tok_file}: tokenizer has no EOS token '{EOS_TOKEN}'")
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = max(tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)
    token_size = token_size_for(vocab_size)
    dtype = np.dtype("<u2" if token_size == 2 else "<u4")
    specs = parse_inputs(inputs)
    stats = ReadStats()

    def encode(batch: _Batch) -> tuple[np.ndarray, np.ndarray]:
        encs = tok.encode_batch_fast(batch.texts, add_special_tokens=False)
        lens = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs)) + 1  # + EOS
        ends = np.cumsum(lens)
        tokens = np.full(int(ends[-1]), eos_id, dtype)
        body = np.ones(len(tokens), bool)
        body[ends - 1] = False
        tokens[body] = np.fromiter(itertools.chain.from_iterable(e.ids for e in encs), dtype)
        return tokens, ends

    with atomic_directory(out) as tmp:
        shutil.copyfile(tok_file, tmp / "tokenizer.json")
        writers = _Writers(tmp, token_size, shard_tokens)
        encoded = _ordered_map(encode, _batches(read_documents(specs, stats)), workers)
        with _no_rust_threads(), _Progress(progress) as bar, closing(encoded):
            for batch, (tokens, ends) in encoded:
                writers.add(batch, tokens, ends)
                bar.update(stats, writers.total_tokens)
        shards = writers.close()
        if not shards:
            raise BloomforgeError(f"no documents in the inputs ({stats.summary()})")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "token_size": token_size,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "eos_id": eos_id,
            "tokenizer": "tokenizer.json",
            "shards": shards,
            "sources": writers.counts,
            "read": stats.to_dict(),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        files.write_json(tmp / "manifest.json", manifest)  # last: its presence = complete
    return manifest


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _batches(docs: Iterator[Document]) -> Iterator[_Batch]:
    batch = _Batch([], [], [])
    size = 0
    for doc in docs:
        n = len(doc.text.encode("utf-8"))
        batch.keys.append((doc.source, doc.language))
        batch.texts.append(doc.text)
        batch.nbytes.append(n)
        size += n
        if len(batch.texts) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = _Batch([], [], []), 0
    if batch.texts:
        yield batch


def _ordered_map(fn, items: Iterator[_Batch], workers: int):
    """(item, fn(item)) in input order, at most 2 * workers batches in flight (bounded memory)."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tokenize")
    pending: deque[tuple[_Batch, Future]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * workers:
                batch, fut = pending.popleft()
                yield batch, fut.result()
        while pending:
            batch, fut = pending.popleft()
            yield batch, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _no_rust_threads() -> Iterator[None]:
    # tokenizers reads TOKENIZERS_PARALLELISM on every batch call; off = one thread per call.
    key = "TOKENIZERS_PARALLELISM"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


class _Writers:
    """One datatrove `TokenizedFile` open per (source, language), rolled over at `shard_tokens`."""

    def __init__(self, root: Path, token_size: int, shard_tokens: int):
        self.root, self.token_size, self.shard_tokens = root, token_size, shard_tokens
        self.open: OrderedDict[tuple[str, str], object] = OrderedDict()  # LRU order
        self.parts: dict[tuple[str, str], int] = {}
        self.dirs: dict[tuple[str, str], str] = {}
        self.counts: dict[str, dict[str, dict[str, int]]] = {}
        self.shards: list[dict] = []
        self.total_tokens = 0

    def _dir(self, key: tuple[str, str]) -> str:
        if key not in self.dirs:
            source, language = safe_segment(key[0]), safe_segment(key[1])
            used = set(self.dirs.values())
            name, i = f"{source}/{language}", 1
            while name in used:  # two names that sanitise alike keep separate folders
                i += 1
                name = f"{source}-{i}/{language}"
            self.dirs[key] = name
        return self.dirs[key]

    def add(self, batch: _Batch, tokens: np.ndarray, ends: np.ndarray) -> None:
        starts = np.concatenate(([0], ends[:-1]))
        i = 0
        for key, run in itertools.groupby(batch.keys):
            n = len(list(run))
            self._write_run(key, tokens, starts[i : i + n], ends[i : i + n])
            c = self.counts.setdefault(key[0], {}).setdefault(
                key[1], {"tokens": 0, "documents": 0, "bytes": 0}
            )
            c["tokens"] += int(ends[i + n - 1] - starts[i])
            c["documents"] += n
            c["bytes"] += sum(batch.nbytes[i : i + n])
            i += n
        self.total_tokens += len(tokens)

    def _write_run(self, key, tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        while len(starts):
            f = self.open.get(key) or self._new_file(key)
            self.open.move_to_end(key)
            room = self.shard_tokens - len(f)
            # documents that fit in this shard; at least one if the shard is empty
            k = int(np.searchsorted(ends - starts[0], room, side="right"))
            if k == 0 and len(f) == 0:
                k = 1
            if k == 0:
                self._close(key)
                continue
            a, b = int(starts[0]), int(ends[k - 1])
            # files: a datatrove shard, in atomic_directory
            f.write_bytes(tokens[a:b].tobytes(), doc_ends=(ends[:k] - a).tolist())
            starts, ends = starts[k:], ends[k:]
            if len(f) >= self.shard_tokens:
                self._close(key)

    def _new_file(self, key):
        from datatrove.pipeline.tokens.tokenizer import TokenizedFile

        if len(self.open) >= MAX_OPEN:  # many sources x languages: stay under the fd limit
            self._close(next(iter(self.open)))
        part = self.parts.get(key, 0)
        self.parts[key] = part + 1
        folder = self.root / self._dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        f = TokenizedFile(
            str(folder),
            f"{part:05d}.ds",
            tokenizer_name_or_path="tokenizer.json",
            save_final_metadata=True,
            token_size=self.token_size,
        )
        self.open[key] = f
        return f

    def _close(self, key) -> None:
        f = self.open.pop(key)
        f.close()
        self.shards.append(
            {
                "file": f"{self._dir(key)}/{f.filename}",
                "source": key[0],
                "language": key[1],
                "tokens": len(f),
                "documents": len(f.doc_ends),
            }
        )

    def close(self) -> list[dict]:
        for key in list(self.open):
            self._close(key)
        return sorted(self.shards, key=lambda s: s["file"])


class _Progress:
    """A one-line rich progress display (documents, MB, tokens), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()
            )
            self.bar.start()
            self.task = self.bar.add_task("tokenizing", total=None)
        return self

    def update(self, stats: ReadStats, tokens: int) -> None:
        if self.enabled:
            desc = f"{stats.documents:,} docs, {stats.bytes / 1e6:,.1f} MB, {tokens:,} tokens"
            self.bar.update(self.task, description=desc)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()
