"""Catalogue cleaning and deduplication for `data prepare`, as datatrove pipeline stages.

In: the filtered documents (jsonl.gz). Out: deduplicated documents (jsonl.gz, metadata intact),
ledger counts per step, and a summary for the data card. See docs/data-dedup.md.
"""

from .config import DedupConfig
from .jobs import DedupJob, dedup_jobs, dedup_summary

__all__ = ["DedupConfig", "DedupJob", "dedup_jobs", "dedup_summary"]
