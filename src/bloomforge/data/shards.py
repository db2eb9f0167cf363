"""Reading token shards: the manifest and memory-mapped datatrove `.ds` files.

In: a token folder written by `bloomforge data tokenize` (manifest.json, then per shard
`X.ds` tokens, `X.ds.index` uint64 document end offsets). Out: `Manifest` with one `ShardInfo`
per shard, and per shard its tokens (np.memmap, uint16 or uint32) and document ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bloomforge.errors import BloomforgeError

FORMAT = "datatrove-ds"


@dataclass(frozen=True)
class ShardInfo:
    file: str
    source: str
    language: str
    tokens: int
    documents: int


@dataclass(frozen=True)
class Manifest:
    path: Path
    token_size: int
    vocab_size: int
    eos_id: int
    shards: list[ShardInfo]
    raw: dict

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2" if self.token_size == 2 else "<u4")


def read_manifest(folder: str | Path) -> Manifest:
    folder = Path(folder)
    file = folder / "manifest.json"
    if not file.is_file():
        raise BloomforgeError(f"{file}: missing (not a complete token folder; run data tokenize)")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise BloomforgeError(f"{file} line {e.lineno}: not valid JSON ({e.msg})") from e
    if raw.get("format") != FORMAT:
        raise BloomforgeError(f"{file}: format is {raw.get('format')!r}, expected {FORMAT!r}")
    try:
        shards = [
            ShardInfo(s["file"], s["source"], s["language"], int(s["tokens"]), int(s["documents"]))
            for s in raw["shards"]
        ]
        manifest = Manifest(
            folder, int(raw["token_size"]), int(raw["vocab_size"]), int(raw["eos_id"]), shards, raw
        )
    except (KeyError, TypeError, ValueError) as e:
        raise BloomforgeError(f"{file}: malformed manifest ({e!r})") from e
    if manifest.token_size not in (2, 4):
        raise BloomforgeError(f"{file}: token_size must be 2 or 4, not {manifest.token_size}")
    if not shards:
        raise BloomforgeError(f"{file}: no shards")
    return manifest


def open_shard(manifest: Manifest, shard: ShardInfo) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document end offsets) of one shard, checked against the manifest."""
    path = manifest.path / shard.file
    index = path.with_name(path.name + ".index")
    for f in (path, index):
        if not f.is_file():
            raise BloomforgeError(f"{f}: missing shard file")
    size = path.stat().st_size
    if size != shard.tokens * manifest.token_size:
        raise BloomforgeError(
            f"{path}: {size} bytes, the manifest says {shard.tokens} tokens of "
            f"{manifest.token_size} bytes (truncated or foreign file)"
        )
    ends = np.fromfile(index, dtype="<u8").astype(np.int64)
    if len(ends) != shard.documents or (len(ends) and ends[-1] != shard.tokens):
        raise BloomforgeError(f"{index}: document index does not match the manifest")
    tokens = np.memmap(path, dtype=manifest.dtype, mode="r") if size else np.zeros(0, np.uint16)
    return tokens, ends
