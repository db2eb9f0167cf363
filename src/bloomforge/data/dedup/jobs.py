"""The dedup stages of `data prepare`, in order, for any datatrove executor, and their summary.

In: the filter stage's output folder (jsonl.gz written by datatrove's JsonlWriter), a work folder
and a `DedupConfig`. Out: `dedup_jobs(...)` -> `DedupJob(name, pipeline, tasks)` list; run in
order they write the kept documents (metadata intact) as jsonl.gz to the output folder, one file
per input file, whatever the number of tasks. `dedup_summary(work_dir)` gives what the report
shows: duplicates and clusters per method and language, template lines, bytes cut.

Stages (those of methods switched off are left out):
1. `dedup_signatures` (tasks): keys per document; datatrove's MinhashDedupSignature if minhash.
2. `dedup_minhash_buckets` (minhash_buckets tasks): datatrove's MinhashDedupBuckets.
3. `dedup_find` (1 task): `ResolveDuplicates` (MinHash: datatrove's candidate pairs, each checked
   against the whole signatures, then connected components).
4. `dedup_substrings_index` (1 task): suffix arrays over what stays, per language shard.
5. `dedup_filter` (tasks): duplicate filters, template-line and substring removal, writer.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupSignature,
)
from datatrove.utils.hashing import HashConfig
from datatrove.utils.word_tokenizers import WordTokenizer

from bloomforge import files

from .config import DedupConfig
from .find import DedupSignatures, ResolveDuplicates
from .io import (
    SPANS,
    TEMPLATES,
    DedupStep,
    OutputWriter,
    PositionReader,
    language,
    load_arrays,
    position,
)
from .remove import DuplicateFilter, SubstringRemoval, TemplateLineRemoval, read_cut_reports
from .substrings import later_repeat_masks, mask_spans
from .text import shingle_hashes, strip_template_lines


class DedupJob(NamedTuple):
    name: str
    pipeline: list[PipelineStep]
    tasks: int


class SplitWords(WordTokenizer):
    """Whitespace words for MinHash shingles: datatrove's own tokenizers need spaCy or NLTK,
    which bloomforge does not install. datatrove's simplify_text has removed punctuation."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class BloomMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature stage with bloomforge's shingles (`text.shingle_hashes`:
    NFKC, lowercase, Unicode words, xxh64 of each buffer slice) instead of datatrove's
    `simplify_text` + one sha1 per shingle: the whole MinHash run is about 1.7x faster at the same
    settings (bench/dedup.py). Signatures, buckets and clusters are datatrove's."""

    def get_shingles(self, text: str) -> np.ndarray:
        return shingle_hashes(text, self.config.n_grams).reshape((-1, 1))


def minhash_config(config: DedupConfig) -> MinhashConfig:
    return MinhashConfig(
        n_grams=config.minhash_ngrams,
        num_buckets=config.minhash_buckets,
        hashes_per_bucket=config.minhash_hashes_per_bucket,
        seed=config.minhash_seed,
        # sha1: datatrove 0.10's xxhash path passes str to xxhash 4, which only takes bytes
        hash_config=HashConfig(precision=64, hash_fc="sha1"),
    )


class SubstringIndex(DedupStep):
    """One task: spans of the documents that stay which repeat >= substring_min_bytes bytes seen
    earlier in the same language shard -> `SPANS` (CSR by position)."""

    name = "bloomforge exact substrings index"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        self.single_task(world_size)
        cfg = self.config
        templates = self.arrays(TEMPLATES)["keys"] if cfg.template_lines else np.zeros(0, np.uint64)
        shards: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        shard_bytes: dict[str, int] = defaultdict(int)
        found: list[tuple[int, list[tuple[int, int]]]] = []
        for doc in data:  # world_size 1: every file, in corpus order
            pos, lang = position(doc), language(doc)
            if cfg.any_signature and self.reason_code(doc) != 0:
                continue
            text, _ = strip_template_lines(doc.text, lang, templates, cfg.template_min_chars)
            raw = text.encode("utf-8", "surrogatepass")
            if shard_bytes[lang] + len(raw) > cfg.substring_shard_bytes and shards[lang]:
                found += self._shard(shards.pop(lang))
                shard_bytes[lang] = 0
            shards[lang].append((pos, raw))
            shard_bytes[lang] += len(raw)
        for docs in shards.values():
            found += self._shard(docs)
        found.sort()
        offsets = np.cumsum([0] + [len(s) for _, s in found], dtype=np.int64)
        flat = [span for _, spans in found for span in spans]
        files.write_arrays(
            self.work_file(SPANS),
            pos=np.array([p for p, _ in found], dtype=np.uint64),
            offsets=offsets,
            starts=np.array([a for a, _ in flat], dtype=np.int64),
            ends=np.array([b for _, b in flat], dtype=np.int64),
        )
        yield from ()

    def _shard(self, docs: list[tuple[int, bytes]]) -> list[tuple[int, list[tuple[int, int]]]]:
        with self.track_time():
            masks = later_repeat_masks([raw for _, raw in docs], self.config.substring_min_bytes)
        self.stat_update("substring_shards")
        return [(pos, mask_spans(m)) for (pos, _), m in zip(docs, masks, strict=True) if m.any()]


def dedup_jobs(
    input_dir: str, output_dir: str, work_dir: str, config: DedupConfig, tasks: int
) -> list[DedupJob]:
    """The stages to run in order (each with any datatrove executor) to deduplicate input_dir."""
    cfg, work = config, Path(work_dir)
    tasks = max(1, int(tasks))
    stages: list[DedupJob] = []
    mh_sigs, mh_buckets = (str(work / "minhash" / d) for d in ("sigs", "buckets"))
    if cfg.any_signature or cfg.minhash:
        sig_pipeline: list[PipelineStep] = [
            PositionReader(input_dir),
            DedupSignatures(str(work), cfg),
        ]
        if cfg.minhash:
            sig_pipeline.append(
                BloomMinhashSignature(mh_sigs, minhash_config(cfg), language=SplitWords())
            )
        stages.append(DedupJob("dedup_signatures", sig_pipeline, tasks))
        find: list[PipelineStep] = []
        if cfg.minhash:
            buckets = MinhashDedupBuckets(mh_sigs, mh_buckets, config=minhash_config(cfg))
            stages.append(DedupJob("dedup_minhash_buckets", [buckets], cfg.minhash_buckets))
        minhash_dir = str(work / "minhash") if cfg.minhash else None
        find.append(ResolveDuplicates(str(work), cfg, minhash_dir))
        stages.append(DedupJob("dedup_find", find, 1))
    if cfg.substrings:
        index = [PositionReader(input_dir), SubstringIndex(str(work), cfg)]
        stages.append(DedupJob("dedup_substrings_index", index, 1))
    steps: list[PipelineStep] = [PositionReader(input_dir)]
    exact = tuple(
        r for r, on in (("exact_text", cfg.exact_text), ("exact_url", cfg.exact_url)) if on
    )
    if exact:
        steps.append(DuplicateFilter(str(work), cfg, "dedup_exact", exact))
    if cfg.simhash:
        steps.append(DuplicateFilter(str(work), cfg, "dedup_simhash", ("simhash",)))
    if cfg.minhash:
        steps.append(DuplicateFilter(str(work), cfg, "dedup_minhash", ("minhash",)))
    if cfg.template_lines:
        steps.append(TemplateLineRemoval(str(work), cfg))
    if cfg.substrings:
        steps.append(SubstringRemoval(str(work), cfg))
    steps.append(OutputWriter(output_dir))
    stages.append(DedupJob("dedup_filter", steps, tasks))
    return stages


def dedup_summary(work_dir: str) -> dict:
    """Duplicates and clusters per method and language, template lines, bytes cut per language."""
    work = Path(work_dir)
    summary: dict = {}
    if (work / "summary.json").is_file():
        summary = json.loads((work / "summary.json").read_text())
    summary["template_lines_removed"] = read_cut_reports(work_dir, TemplateLineRemoval.ledger_name)
    summary["substrings_removed"] = read_cut_reports(work_dir, SubstringRemoval.ledger_name)
    spans = work / SPANS
    if spans.is_file():
        summary["substring_documents"] = int(load_arrays(spans)["pos"].size)
    return summary
