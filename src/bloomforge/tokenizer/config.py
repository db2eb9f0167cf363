"""The recipe's `tokenizer` section: which tokenizer a run uses, or how the pipeline trains one.

In: the mapping under `tokenizer:`. Out: a `TokenizerConfig`. `train` / `finetune` read `path`
(a tokenizer.json or a folder holding one); the tokenizer stage of `bloomforge run` and
`bloomforge tokenizer train` read the training options (their defaults are the CLI's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bloomforge.typed_config import bounded

BLOOM_ALPHA = 0.3  # BLOOM paper §3.2: languages sampled with p_i ~ n_i^0.3


@dataclass
class TokenizerConfig:
    path: str | None = None  # tokenizer.json or a folder holding it (set by `run`)
    vocab_size: int = bounded(32000, ge=1)
    alpha: float = bounded(BLOOM_ALPHA, ge=0)
    max_bytes_per_language: int = bounded(1_000_000_000, ge=1)  # training text per language
    min_frequency: int = bounded(2, ge=1)  # a merge needs a pair seen this often
    seed: int = bounded(0, ge=0)  # which documents the per-language sampling keeps
    fertility: list[str] = field(default_factory=list)  # LANG=PATH; empty: a sample of data
    fertility_docs: int = bounded(200, ge=1)  # documents per language in that sample
