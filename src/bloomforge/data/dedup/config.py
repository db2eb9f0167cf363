"""Settings of the deduplication stages of `data prepare` (the `dedup:` section of data.yaml).

In: a mapping from the config file (through `bloomforge.typed_config`). Out: a validated
`DedupConfig`, with `simhash` / `minhash` resolved from the preset when not given.

Presets (`preset:`), each a starting point that any key given next to it overrides:
- `default`: exact text and URL duplicates, template lines, and MinHash near duplicates
  (datatrove's LSH stages, word 3-grams, 20 bands x 3 rows: threshold about (1/20)^(1/3) = 0.37,
  each candidate pair kept when the whole signatures agree on >= 40 % of hashes; chosen on
  bench/dedup.py's dev set, see docs/data-dedup.md). SimHash off.
- `roots`: what BigScience ran for ROOTS: the same exact, URL and template-line steps, and SimHash
  (word 6-shingles, Hamming distance <= 4, 6 blocks) as the only near-duplicate method.
Exact substrings are off in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bloomforge.errors import BloomforgeError


@dataclass
class DedupConfig:
    # `default` (MinHash near dedup) or `roots` (SimHash only, BigScience's settings)
    preset: Literal["default", "roots"] = "default"
    # Exact duplicates on normalised text (NFKC, lowercase, no whitespace/punctuation/digits)
    # and on normalised URL; the first document in corpus order is kept.
    exact_text: bool = True
    exact_url: bool = True
    # Template lines (ROOTS catalogue cleaning): a line of >= 15 characters seen >= 10 times
    # in one language is boilerplate and is removed from every document.
    template_lines: bool = True
    template_min_chars: int = 15
    template_min_count: int = 10
    # SimHash as ROOTS (BigScience data-preparation, preprocessing/training/
    # 01b_oscar_cleaning_and_filtering/deduplicate/conf/self_deduplicate_*.yaml: window 6,
    # hamming_distance 4, num_blocks 6): 64-bit fingerprints, near duplicates at Hamming
    # distance <= 4, found with 6 blocks (Manku et al. 2007). None: on with preset `roots` only.
    simhash: bool | None = None
    simhash_window: int = 6
    simhash_max_distance: int = 4
    simhash_blocks: int = 6
    # MinHash LSH through datatrove's own stages. None: on unless preset `roots`. Word 3-grams,
    # 20 bands x 3 rows (threshold ~0.37): on bench/dedup.py's dev set it finds every copy edited
    # at <= 5 % and 99 % of those at 10 % at precision 0.996 (datatrove's defaults, 5-grams and
    # 14 x 8, miss half the copies edited at 5 %).
    minhash: bool | None = None
    minhash_ngrams: int = 3
    minhash_buckets: int = 20
    minhash_hashes_per_bucket: int = 3
    # A candidate pair (one band equal) counts only when the whole signatures agree on at least
    # this share of hashes (estimated Jaccard); 0: every candidate, as datatrove's clustering.
    minhash_min_similarity: float = 0.4
    minhash_seed: int = 1
    # Exact substrings (Lee et al. 2022, "Deduplicating Training Data Makes Language Models
    # Better"): spans of >= 50 bytes already seen earlier in the corpus are cut out.
    substrings: bool = False
    substring_min_bytes: int = 50
    # The suffix array is built per language over shards of at most this many bytes (memory is
    # about 40x the shard); repeats across two shards are not found.
    substring_shard_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.preset not in ("default", "roots"):
            raise BloomforgeError(f"dedup: preset {self.preset!r}: expected 'default' or 'roots'")
        if self.simhash is None:
            self.simhash = self.preset == "roots"
        if self.minhash is None:
            self.minhash = self.preset != "roots"
        if self.simhash and not 0 <= self.simhash_max_distance < self.simhash_blocks <= 64:
            raise BloomforgeError(
                "dedup: need 0 <= simhash_max_distance < simhash_blocks <= 64, got "
                f"{self.simhash_max_distance} and {self.simhash_blocks}"
            )
        for key in (
            "simhash_window",
            "template_min_count",
            "minhash_ngrams",
            "minhash_buckets",
            "minhash_hashes_per_bucket",
            "substring_min_bytes",
        ):
            if getattr(self, key) < 1:
                raise BloomforgeError(f"dedup: {key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.minhash_min_similarity <= 1:
            value = self.minhash_min_similarity
            raise BloomforgeError(f"dedup: minhash_min_similarity must be in [0, 1], got {value}")
        if self.substring_shard_bytes < self.substring_min_bytes:
            raise BloomforgeError("dedup: substring_shard_bytes must be >= substring_min_bytes")

    @property
    def any_signature(self) -> bool:
        return self.exact_text or self.exact_url or self.template_lines or self.simhash
