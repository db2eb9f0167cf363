"""Token folders for tests, written straight from `tokenizers` output in datatrove's layout.

Independent of `bloomforge data tokenize`: it is the reference the loader is checked against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bloomforge.tokenizer import byte_level_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus_lines(lang: str, n: int) -> list[str]:
    path = SHARED / "corpus" / f"{lang}.txt"
    if not path.exists():
        import pytest

        pytest.skip(f"{path} not available")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:n]


def write_token_folder(
    out: Path, groups: dict[tuple[str, str], list[str]], docs_per_shard: int = 10**9
) -> dict[tuple[str, str], list[list[int]]]:
    """Tokenize each (source, language) group's documents with the byte-level tokenizer and
    write manifest + .ds/.ds.index shards. Returns the token ids per group and document (EOS
    included)."""
    tok = byte_level_tokenizer()
    eos = tok.token_to_id("</s>")
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    shards, ids_out = [], {}
    for (source, lang), docs in sorted(groups.items()):
        encoded = [[*e.ids, eos] for e in tok.encode_batch(docs, add_special_tokens=False)]
        ids_out[(source, lang)] = encoded
        for part, start in enumerate(range(0, len(encoded), docs_per_shard)):
            chunk = encoded[start : start + docs_per_shard]
            rel = f"{source}/{lang}/{part:05d}.ds"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            flat = np.array([t for d in chunk for t in d], dtype="<u2")
            flat.tofile(out / rel)
            ends = np.cumsum([len(d) for d in chunk]).astype("<u8")
            ends.tofile(out / f"{rel}.index")
            shards.append(
                {
                    "file": rel,
                    "source": source,
                    "language": lang,
                    "tokens": int(flat.size),
                    "documents": len(chunk),
                }
            )
    manifest = {
        "format": "datatrove-ds",
        "version": 1,
        "token_size": 2,
        "dtype": "uint16",
        "vocab_size": tok.get_vocab_size(),
        "eos_id": eos,
        "tokenizer": "tokenizer.json",
        "shards": shards,
        "sources": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return ids_out
