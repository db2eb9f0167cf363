"""The recipe's data sections: where the text comes from and how training reads its tokens.

In: the mappings under `corpus:`, `tokens:` and `data:` of a recipe (`prepare:` is
`bloomforge.data.prepare.config.PrepareConfig`). Out:
  CorpusConfig  text found on this machine (`bloomforge run`'s corpus stage, data/corpus.py)
  TokensConfig  the held-out split and token shards of `bloomforge run`'s tokens stage
  DataConfig    the training loader: token shards (data/loader.py) or xP3 records (mtf/loader.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bloomforge.typed_config import bounded


@dataclass
class CorpusConfig:
    """Text from this machine: translated message catalogues and the Python standard library."""

    locale_dir: str = "/usr/share/locale"
    languages: int = 8  # the N languages with the most translated text (after `include`)
    include: list[str] = field(default_factory=list)  # languages always taken when present
    min_language_bytes: int = 200_000  # a language with less translated text is left out
    max_bytes_per_language: int = 1_000_000
    english_bytes: int = 1_000_000  # msgids (the English originals) as the "en" text; 0: none
    document_bytes: int = 4_000  # consecutive messages of a catalogue joined into documents
    code_dir: str | None = None  # None: this Python's standard library
    code_bytes: int = 2_000_000  # 0: no code source


@dataclass
class TokensConfig:
    # Every k-th document of a language is held out (perplexity text, prompts), k = this or
    # less for a small language, up to heldout_docs per language; the rest is tokenized.
    heldout_every: int = bounded(50, ge=1)
    heldout_docs: int = bounded(100, ge=0)
    shard_tokens: int = bounded(2**28, ge=1)


@dataclass
class DataConfig:
    """The training loader."""

    tokens: str | None = None  # folder of token shards (`bloomforge data tokenize`)
    # Multitask finetuning instead: a folder of xP3 {inputs, targets} jsonl (`bloomforge mtf
    # build`, or your own), packed as BLOOMZ was trained (bloomforge.mtf.loader); groups are
    # its languages, weighted by `weights` or tokens^alpha.
    mtf: str | None = None
    # How data.mtf samples fill rows: "megatron", greedily in shuffled order as BLOOMZ was
    # trained (a row closes when the next sample does not fit), or "best_fit", first-fit
    # decreasing over windows of 1024 shuffled samples (fewer padding tokens; bench/finetune.py)
    packing: Literal["megatron", "best_fit"] = "megatron"
    seq_len: int = bounded(2048, ge=1)
    # Mixing units of the loader: sources (BLOOM weighted its datasets) or languages.
    group_by: Literal["source", "language"] = "source"
    weights: dict[str, float] | None = None  # explicit weight per group (a ratio file)
    alpha: float = bounded(
        1.0, ge=0
    )  # without weights: p_i ~ tokens_i^alpha (1.0 = natural proportions)
    valid_fraction: float = bounded(0.05, ge=0, lt=1)  # BLOOM held out 5% of each dataset

    # data prepare's keys (sources, filters, ...): its section is `prepare`
    RENAMED: ClassVar[dict[str, str]] = {
        k: f"data prepare's section is 'prepare' ('data' is the training loader); "
        f"move '{k}' under 'prepare'"
        for k in ("sources", "filters", "dedup", "dedup_scope", "pii", "max_doc_bytes")
    }
