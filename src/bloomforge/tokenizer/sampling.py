"""Language sampling for tokenizer training: p_i ∝ n_i^α, as BLOOM did (α = 0.3).

In: input specs (read only through `bloomforge.documents.inputs`), α, a byte cap per language and a
seed. Out: a `SamplingPlan` (per language: bytes and documents available, p_i, the byte target)
and a stream of documents realising it, with the bytes and documents actually used.

How the sampling is realised, exactly:
1. Pass 1 streams every input once and counts n_i (UTF-8 bytes of the documents' text) and
   documents per language. Nothing is kept in memory but the counts.
2. p_i = n_i^α / Σ_j n_j^α. The total byte budget is B = min(Σ_j n_j, min_i cap / p_i): the
   budget of the natural data, shrunk just enough that no language's target exceeds the cap, so
   the cap never distorts the proportions. Language i's target is t_i = p_i · B (≤ cap).
3. Pass 2 streams the inputs again. Each document of language i is emitted ⌊r_i⌋ times plus one
   more time with probability r_i − ⌊r_i⌋, where r_i = t_i / n_i (r_i > 1 upsamples by repeating
   documents, r_i < 1 downsamples). The coin flips come from `random.Random(f"{seed}:{lang}")`,
   so the sample is deterministic for a seed and independent between languages. The expected
   bytes used are exactly t_i; the realised bytes differ by sampling noise only (binomial,
   relative error ~1/sqrt(documents)). Copies that would take a language past the cap are
   dropped, so the cap holds exactly.
α = 1 gives r_i = 1 for every language (natural proportions, every document once, unless the cap
binds); α = 0 gives every language the same byte share.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from bloomforge.documents.inputs import InputSpec, ReadStats, read_documents
from bloomforge.errors import BloomforgeError

# BLOOM §3.2 (tokenizer): "sampled ... with a multilingual alpha-sampling, alpha = 0.3".
BLOOM_ALPHA = 0.3
DEFAULT_MAX_BYTES_PER_LANGUAGE = 1_000_000_000


@dataclass
class LanguageShare:
    """What one language had, was given and got."""

    language: str
    bytes_available: int
    documents_available: int
    probability: float = 0.0  # p_i
    target_bytes: float = 0.0  # t_i = p_i * B
    rate: float = 0.0  # r_i = t_i / n_i: expected copies of each document
    bytes_used: int = 0
    documents_used: int = 0  # copies emitted (a repeated document counts each time)
    unique_documents_used: int = 0

    def to_dict(self) -> dict:
        return {
            "bytes_available": self.bytes_available,
            "documents_available": self.documents_available,
            "p": self.probability,
            "target_bytes": round(self.target_bytes),
            "rate": self.rate,
            "bytes_used": self.bytes_used,
            "share_used": 0.0,  # filled by SamplingPlan.to_dict
            "documents_used": self.documents_used,
            "unique_documents_used": self.unique_documents_used,
        }


@dataclass
class SamplingPlan:
    alpha: float
    max_bytes_per_language: int
    seed: int
    languages: dict[str, LanguageShare] = field(default_factory=dict)
    total_budget: float = 0.0  # B

    def to_dict(self) -> dict:
        used = sum(s.bytes_used for s in self.languages.values()) or 1
        langs = {}
        for name, share in sorted(self.languages.items()):
            d = share.to_dict()
            d["share_used"] = share.bytes_used / used
            langs[name] = d
        return {
            "alpha": self.alpha,
            "max_bytes_per_language": self.max_bytes_per_language,
            "seed": self.seed,
            "total_budget_bytes": round(self.total_budget),
            "method": "p_i ∝ n_i^alpha; B = min(sum n, min_i cap/p_i); t_i = p_i*B; each "
            "document emitted floor(r_i) times + 1 with prob frac(r_i), r_i = t_i/n_i, "
            "copies beyond the cap dropped; rng = Random(f'{seed}:{lang}')",
            "languages": langs,
        }


def count_languages(
    specs: Sequence[InputSpec], stats: ReadStats | None = None, text_key: str = "text"
) -> dict[str, LanguageShare]:
    """Pass 1: bytes and documents per language (streamed; only counts are kept)."""
    shares: dict[str, LanguageShare] = {}
    for doc in read_documents(specs, stats, text_key):
        share = shares.setdefault(doc.language, LanguageShare(doc.language, 0, 0))
        share.bytes_available += len(doc.text.encode("utf-8"))
        share.documents_available += 1
    return shares


def plan_sampling(
    shares: dict[str, LanguageShare],
    alpha: float = BLOOM_ALPHA,
    max_bytes_per_language: int = DEFAULT_MAX_BYTES_PER_LANGUAGE,
    seed: int = 0,
) -> SamplingPlan:
    """p_i, B and t_i from the counts of pass 1 (see the module docstring)."""
    if alpha < 0:
        raise BloomforgeError(f"--alpha {alpha}: must be >= 0")
    if max_bytes_per_language <= 0:
        raise BloomforgeError(f"--max-bytes-per-language {max_bytes_per_language}: must be > 0")
    shares = {k: v for k, v in shares.items() if v.bytes_available > 0}
    if not shares:
        raise BloomforgeError("the inputs hold no documents to train on")
    weights = {k: v.bytes_available**alpha for k, v in shares.items()}
    z = sum(weights.values())
    natural = sum(v.bytes_available for v in shares.values())
    probs = {k: w / z for k, w in weights.items()}
    budget = min(natural, min(max_bytes_per_language / p for p in probs.values()))
    plan = SamplingPlan(alpha, max_bytes_per_language, seed, total_budget=budget)
    for k, share in sorted(shares.items()):
        share.probability = probs[k]
        target = probs[k] * budget
        rate = target / share.bytes_available
        if abs(rate - round(rate)) < 1e-9:  # α = 1: exactly one copy each, not 0.999999...
            rate = float(round(rate))
            target = rate * share.bytes_available
        # min(): float rounding must never lift a target over the cap.
        share.target_bytes = min(target, max_bytes_per_language)
        share.rate = rate
        plan.languages[k] = share
    return plan


def sample_documents(
    specs: Sequence[InputSpec], plan: SamplingPlan, text_key: str = "text"
) -> Iterator[str]:
    """Pass 2: the texts to train on, realising `plan` and recording what was used in it."""
    rngs = {k: random.Random(f"{plan.seed}:{k}") for k in plan.languages}
    for doc in read_documents(specs, None, text_key):
        share = plan.languages.get(doc.language)
        if share is None:
            continue
        size = len(doc.text.encode("utf-8"))
        whole = int(share.rate)
        copies = whole + (rngs[doc.language].random() < share.rate - whole)
        emitted = 0
        for _ in range(copies):
            if share.bytes_used + size > plan.max_bytes_per_language:
                break
            share.bytes_used += size
            share.documents_used += 1
            emitted += 1
            yield doc.text
        share.unique_documents_used += emitted > 0
