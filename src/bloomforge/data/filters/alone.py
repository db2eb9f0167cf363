"""What each quality filter would discard on its own: the ROOTS paper's per-filter figure.

In: the filter steps of a source (`filter_steps(config)`) and the documents entering them. Out:
the same documents, untouched, and counters in the step's datatrove stats: per source and
language, the documents seen (`_documents`) and, per filter, those it would remove by itself
(`alone|SOURCE|LANGUAGE|FILTER`). The filter chain itself removes a document at the first filter
that rejects it, so its ledger says what each filter removed *after* the ones before it; this
step gives the order-free view. `read_alone(files)` adds the counters up over tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import get_filter_result

from bloomforge.data.filters.quality import RootsFilter
from bloomforge.data.ledger import counters_by_source

ALONE = "alone"
SEEN = "_documents"


def alone_key(source: str, language: str, name: str) -> str:
    return f"{ALONE}|{source}|{language}|{name}"


class EachFilterAlone(PipelineStep):
    """Runs every filter's check on every document and counts rejections; removes nothing.
    The filters share their per-document word cache with the chain that follows, so words are
    still split once per document."""

    type = "📊 - STATS"
    name = "each filter alone"

    def __init__(self, filters: list[RootsFilter]) -> None:
        super().__init__()
        self.filters = filters

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            source = str(doc.metadata.get("source", "unknown"))
            language = str(doc.metadata.get("language", "unknown"))
            with self.track_time():
                self.stat_update(alone_key(source, language, SEEN))
                for f in self.filters:
                    keep, _ = get_filter_result(f.filter(doc))
                    if not keep:
                        self.stat_update(alone_key(source, language, f.ledger_name))
            yield doc


def read_alone(stats_files: Iterable[Path]) -> dict[str, dict[str, dict[str, int]]]:
    """{source: {language: {"_documents": n, filter: removed alone}}} over datatrove task stats."""
    return counters_by_source(stats_files, ALONE)
