"""The removal ledger of `data prepare`: what each step saw, kept and removed, and why.

In: datatrove `Document`s passing through bloomforge's pipeline steps (`metadata["source"]` and
`metadata["language"]` set by the reader and language identification). Out: counters in the
step's datatrove `Stats` (saved per task in `LOGGING_DIR/stats/NNNNN.json` by datatrove's
executors, so finished tasks keep theirs on resume), and `read_ledger(folder)`, which adds them
up over tasks and pipeline stages into rows `(step, source, language, outcome, documents, bytes)`;
`counters_by_source` does the same for other per-source, per-language counters.

Outcome is `"in"`, `"kept"` or the removal reason. For every step, per source and language:
documents in = kept + removed over all reasons, and the same for bytes (UTF-8 of the text the
step received). A step that rewrites text (PII) records `"in"`/`"kept"` and its own counters.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result

PREFIX = "ledger"
IN = "in"
KEPT = "kept"
_SEP = "|"


def ledger_key(step: str, source: str, language: str, outcome: str, what: str) -> str:
    for part in (step, source, language, outcome):
        if _SEP in part:
            raise ValueError(f"ledger names cannot contain {_SEP!r}: {part!r}")
    return _SEP.join((PREFIX, step, source, language, outcome, what))


def record(step: PipelineStep, doc: Document, outcome: str, step_name: str | None = None) -> None:
    """Count `doc` (one document, its UTF-8 bytes) under `outcome` for `step`."""
    name = step_name or getattr(step, "ledger_name", None) or type(step).__name__
    source = str(doc.metadata.get("source", "unknown"))
    language = str(doc.metadata.get("language", "unknown"))
    step.stat_update(ledger_key(name, source, language, outcome, "docs"))
    step.stat_update(
        ledger_key(name, source, language, outcome, "bytes"),
        value=len(doc.text.encode("utf-8", "surrogatepass")),
        unit="bytes",
    )


class CountedFilter(BaseFilter):
    """A datatrove filter that records every document in the ledger.

    Subclasses set `ledger_name` (the step's name in stats and reports) and implement
    `filter(doc) -> bool | tuple[bool, str]` as for any datatrove filter; a removal without a
    reason is recorded as `"removed"`. Removed documents go to the exclusion writer (if any) with
    `metadata["filter_reason"]` and `metadata["filter_step"]`.
    """

    ledger_name: str = "filter"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        writer_ctx = self.exclusion_writer or contextlib.nullcontext()
        with writer_ctx as writer:
            for doc in data:
                record(self, doc, IN)
                with self.track_time():
                    keep, reason = get_filter_result(self.filter(doc))
                if keep:
                    record(self, doc, KEPT)
                    yield doc
                    continue
                reason = reason or "removed"
                record(self, doc, reason)
                if writer is not None:
                    doc.metadata["filter_reason"] = reason
                    doc.metadata["filter_step"] = self.ledger_name
                    writer.write(doc, rank)


@dataclass(frozen=True)
class LedgerRow:
    step: str
    source: str
    language: str
    outcome: str
    documents: int
    bytes: int


def _stat_total(value: object) -> float:
    if isinstance(value, dict):
        return float(value.get("total", 0))
    return float(value or 0)


def ledger_from_stats(stats_files: Iterable[Path]) -> list[LedgerRow]:
    """Add up the ledger counters of datatrove per-task stats files (any stages, any steps)."""
    totals: dict[tuple[str, str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for path in stats_files:
        for step_stats in json.loads(Path(path).read_text()):
            for key, value in step_stats.get("stats", {}).items():
                parts = key.split(_SEP)
                if len(parts) != 6 or parts[0] != PREFIX:
                    continue
                _, step, source, language, outcome, what = parts
                totals[(step, source, language, outcome)][what == "bytes"] += _stat_total(value)
    return [LedgerRow(*k, documents=int(v[0]), bytes=int(v[1])) for k, v in sorted(totals.items())]


def task_stats_files(logging_dir: Path) -> Iterator[Path]:
    """Per-task stats of every datatrove stage below `logging_dir` (`*/stats/NNNNN.json`)."""
    yield from sorted(Path(logging_dir).glob("**/stats/*.json"))


def read_ledger(logging_dir: Path) -> list[LedgerRow]:
    return ledger_from_stats(task_stats_files(logging_dir))


def counters_by_source(stats_files: Iterable[Path], prefix: str) -> dict[str, dict[str, dict]]:
    """{source: {language: {name: total}}} of the counters `PREFIX|SOURCE|LANGUAGE|NAME` that a
    step kept in its datatrove stats (PII spans per type, filters' verdicts alone, ...), summed
    over task stats files."""
    counts: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for path in stats_files:
        for step_stats in json.loads(Path(path).read_text()):
            for key, value in step_stats.get("stats", {}).items():
                parts = key.split(_SEP)
                if len(parts) == 4 and parts[0] == prefix:
                    counts[parts[1]][parts[2]][parts[3]] += int(_stat_total(value))
    return json.loads(json.dumps(counts))
