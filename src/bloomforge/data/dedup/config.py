"""Settings of the deduplication stages of `data prepare` (the `dedup:` section of data.yaml).

In: a mapping from the config file (through `bloomforge.typed_config`). Out: a validated
`DedupConfig`. Defaults run on one CPU: exact text and URL duplicates, template lines and SimHash
near duplicates are on; MinHash (datatrove's stages) and exact substrings are available.
"""

from __future__ import annotations

from dataclasses import dataclass

from bloomforge.errors import BloomforgeError


@dataclass
class DedupConfig:
    # Exact duplicates on normalised text (NFKC, lowercase, no whitespace/punctuation/digits)
    # and on normalised URL; the first document in corpus order is kept.
    exact_text: bool = True
    exact_url: bool = True
    # Template lines (ROOTS catalogue cleaning): a line of >= 15 characters seen >= 10 times
    # in one language is boilerplate and is removed from every document.
    template_lines: bool = True
    template_min_chars: int = 15
    template_min_count: int = 10
    # SimHash as ROOTS (BigScience data-preparation): 64-bit fingerprints over word shingles of
    # window 6, near duplicates at Hamming distance <= 4, found with 6 blocks (Manku et al. 2007).
    simhash: bool = True
    simhash_window: int = 6
    simhash_max_distance: int = 4
    simhash_blocks: int = 6
    # MinHash LSH through datatrove's own stages (datatrove defaults: 5-grams, 14 bands x 8).
    minhash: bool = False
    minhash_ngrams: int = 5
    minhash_buckets: int = 14
    minhash_hashes_per_bucket: int = 8
    minhash_seed: int = 1
    # Exact substrings (Lee et al. 2022, "Deduplicating Training Data Makes Language Models
    # Better"): spans of >= 50 bytes already seen earlier in the corpus are cut out.
    substrings: bool = False
    substring_min_bytes: int = 50
    # The suffix array is built per language over shards of at most this many bytes (memory is
    # about 40x the shard); repeats across two shards are not found.
    substring_shard_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.simhash and not 0 <= self.simhash_max_distance < self.simhash_blocks <= 64:
            raise BloomforgeError(
                "dedup: need 0 <= simhash_max_distance < simhash_blocks <= 64, got "
                f"{self.simhash_max_distance} and {self.simhash_blocks}"
            )
        for key in (
            "simhash_window",
            "template_min_count",
            "minhash_ngrams",
            "substring_min_bytes",
        ):
            if getattr(self, key) < 1:
                raise BloomforgeError(f"dedup: {key} must be >= 1, got {getattr(self, key)}")
        if self.substring_shard_bytes < self.substring_min_bytes:
            raise BloomforgeError("dedup: substring_shard_bytes must be >= substring_min_bytes")

    @property
    def any_signature(self) -> bool:
        return self.exact_text or self.exact_url or self.template_lines or self.simhash
