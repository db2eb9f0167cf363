"""Reading a token folder written by `bloomforge data tokenize` (see docs/tokens.md).

In: the folder. Out: `Manifest` (validated: format, version, dtype, every shard's files present
with the sizes the manifest promises) and, per shard, its tokens as a read-only `np.memmap` and
its document end offsets as a numpy array. Any inconsistency is a one-line `BloomforgeError`
naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomforge.errors import BloomforgeError

FORMAT, VERSION = "datatrove-ds", 1
_DTYPES = {2: "uint16", 4: "uint32"}


@dataclass(frozen=True)
class Shard:
    path: Path  # absolute path of the .ds file
    file: str  # path relative to the token folder, as in the manifest
    source: str
    language: str
    tokens: int
    documents: int


@dataclass(frozen=True)
class Manifest:
    root: Path
    token_size: int  # bytes per token: 2 or 4
    dtype: np.dtype  # little-endian uint16 or uint32
    vocab_size: int
    eos_id: int
    tokenizer: Path  # the tokenizer.json copy inside the folder
    shards: list[Shard]
    sources: dict  # {source: {language: {"tokens", "documents", "bytes"}}}
    read: dict  # ReadStats.to_dict() of the tokenize run
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def documents(self) -> int:
        return sum(s.documents for s in self.shards)


def read_manifest(folder: str | Path) -> Manifest:
    root = Path(folder)
    path = root / "manifest.json"
    if not path.is_file():
        raise BloomforgeError(
            f"{root}: no manifest.json (not a token folder, or `data tokenize` did not finish)"
        )
    try:
        m = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BloomforgeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise BloomforgeError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    if m.get("version") != VERSION:
        raise BloomforgeError(f"{path}: version {m.get('version')!r} is not supported ({VERSION})")
    try:
        token_size, dtype_name = int(m["token_size"]), m["dtype"]
        if _DTYPES.get(token_size) != dtype_name:
            raise BloomforgeError(f"{path}: token_size {token_size} vs dtype {dtype_name!r}")
        shards = [
            Shard(
                path=root / s["file"],
                file=s["file"],
                source=s["source"],
                language=s["language"],
                tokens=int(s["tokens"]),
                documents=int(s["documents"]),
            )
            for s in m["shards"]
        ]
        manifest = Manifest(
            root=root,
            token_size=token_size,
            dtype=np.dtype("<u2" if token_size == 2 else "<u4"),
            vocab_size=int(m["vocab_size"]),
            eos_id=int(m["eos_id"]),
            tokenizer=root / m["tokenizer"],
            shards=shards,
            sources=m["sources"],
            read=m.get("read", {}),
            seconds=float(m.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BloomforgeError(f"{path}: missing or malformed key ({e!r})") from e
    if not manifest.tokenizer.is_file():
        raise BloomforgeError(f"{manifest.tokenizer}: missing (named in {path})")
    for s in shards:
        _check_sizes(s, token_size)
    return manifest


def _check_sizes(s: Shard, token_size: int) -> None:
    for file, want in ((s.path, s.tokens * token_size), (_index(s.path), s.documents * 8)):
        if not file.is_file():
            raise BloomforgeError(f"{file}: missing (listed in manifest.json)")
        size = file.stat().st_size
        if size != want:
            raise BloomforgeError(f"{file}: {size} bytes, manifest.json implies {want}")


def _index(ds: Path) -> Path:
    return ds.with_name(ds.name + ".index")


def open_shard(manifest: Manifest, shard: Shard | int) -> tuple[np.memmap, np.ndarray]:
    """(tokens, ends): the shard's token ids (read-only memmap) and document end offsets.

    Document i is `tokens[ends[i-1]:ends[i]]` (with ends[-1] = 0), its last token the EOS.
    """
    s = manifest.shards[shard] if isinstance(shard, int) else shard
    tokens = np.memmap(s.path, dtype=manifest.dtype, mode="r")
    ends = np.fromfile(_index(s.path), dtype="<u8")
    if len(ends) != s.documents or (len(ends) and int(ends[-1]) != len(tokens)):
        raise BloomforgeError(f"{_index(s.path)}: document ends do not match {s.path.name}")
    return tokens, ends
