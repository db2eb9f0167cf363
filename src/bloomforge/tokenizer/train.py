"""Train a BLOOM-style byte-level BPE tokenizer on α-sampled multilingual text.

In: input specs (`[LANG=]PATH`, read through `documents.inputs`), vocabulary size, α, byte
cap per language, seed. Out: an HF `tokenizers.Tokenizer` and the sampling actually used; on
disk (`save_trained`) a folder with `tokenizer.json` and `sampling.json`, written atomically.

The configuration is BLOOM's (bigscience/tokenizer `tokenizer.json`): no normalizer; pre-tokenizer
= Split on the regex ` ?[^(\\s|[.,!?…。，、।۔،])]+` with behaviour "isolated" (so every run of
whitespace and every punctuation run stays a piece of its own: indentation, tabs and line breaks
survive, as BLOOM wanted for code), then ByteLevel(add_prefix_space=False, use_regex=False), which
maps every byte to a printable character, so no input is ever out of vocabulary; ByteLevel
decoder; special tokens `<unk> <s> </s> <pad>` at ids 0-3; all 256 bytes in the vocabulary.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from bloomforge import files
from bloomforge.documents.inputs import InputSpec, ReadStats
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.tokenizer.io import SPECIAL_TOKENS
from bloomforge.tokenizer.sampling import (
    BLOOM_ALPHA,
    DEFAULT_MAX_BYTES_PER_LANGUAGE,
    SamplingPlan,
    count_languages,
    plan_sampling,
    sample_documents,
)

# bigscience/tokenizer tokenizer.json, pre_tokenizer.pretokenizers[0].pattern.Regex.
BLOOM_SPLIT_REGEX = " ?[^(\\s|[.,!?…。，、।۔،])]+"
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # every byte + the specials
_BATCH = 1000  # documents per batch handed to the Rust trainer


@dataclass
class TrainResult:
    tokenizer: Tokenizer
    plan: SamplingPlan
    read_stats: ReadStats

    def sampling_dict(self, vocab_size: int) -> dict:
        return {
            "vocab_size_requested": vocab_size,
            "vocab_size": self.tokenizer.get_vocab_size(),
            **self.plan.to_dict(),
            "read": self.read_stats.to_dict(),
        }


def bloom_style_tokenizer() -> Tokenizer:
    """An untrained BPE tokenizer with BLOOM's pre-tokenizer, decoder and no normalizer."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(BLOOM_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # BLOOM's post-processor: offsets only (trim_offsets=False), adds no tokens.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_on_texts(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> Tokenizer:
    """Train `bloom_style_tokenizer()` on a stream of texts (the one BPE training call)."""
    check_vocab_size(vocab_size)
    tok = bloom_style_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # first, so ids 0-3 as in BLOOM
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
        show_progress=show_progress,
    )
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return tok


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise BloomforgeError(
            f"--vocab-size {vocab_size}: must be at least {MIN_VOCAB_SIZE} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens)"
        )


def train_tokenizer(
    specs: Sequence[InputSpec],
    vocab_size: int,
    alpha: float = BLOOM_ALPHA,
    max_bytes_per_language: int = DEFAULT_MAX_BYTES_PER_LANGUAGE,
    seed: int = 0,
    min_frequency: int = 2,
    text_key: str = "text",
    show_progress: bool = False,
) -> TrainResult:
    """Count languages (pass 1), plan α-sampling, train on the sampled stream (pass 2)."""
    check_vocab_size(vocab_size)
    stats = ReadStats()
    shares = count_languages(specs, stats, text_key)
    plan = plan_sampling(shares, alpha, max_bytes_per_language, seed)
    tok = train_on_texts(
        sample_documents(specs, plan, text_key), vocab_size, min_frequency, show_progress
    )
    return TrainResult(tok, plan, stats)


def save_trained(out: str | Path, result: TrainResult, vocab_size: int) -> Path:
    """`out/tokenizer.json` + `out/sampling.json`, the folder replaced atomically."""
    with atomic_directory(out) as tmp:
        result.tokenizer.save(str(tmp / "tokenizer.json"))  # files: in atomic_directory
        files.write_json(tmp / "sampling.json", result.sampling_dict(vocab_size), indent=2)
    return Path(out)


def format_sampling(plan: SamplingPlan) -> str:
    """A markdown table of the sampling used."""
    used = sum(s.bytes_used for s in plan.languages.values()) or 1
    rows = [
        "| language | bytes available | p | bytes used | share used | documents used |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in sorted(plan.languages.items()):
        rows.append(
            f"| {name} | {s.bytes_available:,} | {s.probability:.4f} | {s.bytes_used:,} "
            f"| {s.bytes_used / used:.4f} | {s.documents_used:,} |"
        )
    return "\n".join(rows)


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def progress_enabled() -> bool:
    return sys.stderr.isatty()
