"""Removing what the find stage decided: duplicates, template lines, repeated substrings.

In: documents tagged by `PositionReader`, and the dedup work folder (`resolved.npz`,
`templates.npz`, `substrings/spans.npz`). Out: the documents that stay, with template lines and
repeated spans cut out. Every step records each document in the ledger (`bloomforge.data.ledger`):
"in", "kept" or the reason it went. Steps that cut text also record the bytes they cut under
their own outcome with 0 documents ("template_lines", "exact_substrings"), so per step both
documents and bytes add up: in = kept + removed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from bloomforge import files
from bloomforge.data.ledger import IN, KEPT, CountedFilter, ledger_key, record

from .config import DedupConfig
from .find import REASONS, load_resolved, load_templates
from .io import load_arrays, position
from .substrings import cut_spans
from .text import strip_template_lines

TEMPLATE_EMPTY = "template_lines_empty"
SUBSTRINGS_EMPTY = "exact_substrings_empty"


class DuplicateFilter(CountedFilter):
    """Removes the documents that `ResolveDuplicates` marked with one of `reasons`."""

    name = "bloomforge dedup filter"

    def __init__(self, work_dir: str, ledger_name: str, reasons: tuple[str, ...]) -> None:
        super().__init__()
        self.work_dir = str(work_dir)
        self.ledger_name = ledger_name
        self.reasons = tuple(reasons)
        self._resolved: tuple[np.ndarray, np.ndarray] | None = None  # loaded on first use

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self._resolved is None:
            self._resolved = load_resolved(self.work_dir)
        positions, reasons = self._resolved
        pos = np.uint64(position(doc))
        i = int(np.searchsorted(positions, pos))
        if i == positions.size or positions[i] != pos:
            raise ValueError(f"document {doc.id} was not seen by the dedup signature stage")
        reason = REASONS[int(reasons[i])]
        return (False, reason) if reason in self.reasons else True


class _CuttingStep(PipelineStep):
    """A step that cuts text from documents and drops those left empty, with a ledger."""

    type = "🫂 - DEDUP"
    ledger_name = "dedup_cut"
    cut_outcome = "cut"
    empty_reason = "empty"

    def __init__(self, work_dir: str, config: DedupConfig) -> None:
        super().__init__()
        self.work_dir = str(work_dir)
        self.config = config
        self._loaded = False

    def load(self) -> None:
        raise NotImplementedError

    def cut(self, doc: Document) -> tuple[str, int]:
        """New text and the number of pieces (lines, spans) cut."""
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        if not self._loaded:
            self.load()
            self._loaded = True
        pieces: Counter = Counter()
        cut_bytes: Counter = Counter()
        for doc in data:
            record(self, doc, IN)
            with self.track_time():
                before = len(doc.text.encode("utf-8", "surrogatepass"))
                text, n_cut = self.cut(doc)
            if not n_cut:
                record(self, doc, KEPT)
                yield doc
                continue
            lang = str(doc.metadata.get("language", "unknown"))
            pieces[lang] += n_cut
            self.stat_update(f"{self.cut_outcome}_pieces", value=n_cut)
            if not text.strip():
                cut_bytes[lang] += before
                record(self, doc, self.empty_reason)
                continue
            doc.text = text
            removed = before - len(text.encode("utf-8", "surrogatepass"))
            cut_bytes[lang] += removed
            source = str(doc.metadata.get("source", "unknown"))
            key = ledger_key(self.ledger_name, source, lang, self.cut_outcome, "bytes")
            self.stat_update(key, value=removed, unit="bytes")
            record(self, doc, KEPT)
            yield doc
        report = {"pieces": dict(pieces), "bytes": dict(cut_bytes)}
        report_file = Path(self.work_dir) / "report" / f"{self.ledger_name}-{rank:05d}.json"
        files.write_json(report_file, report, sort_keys=True, ensure_ascii=True, newline=False)


class TemplateLineRemoval(_CuttingStep):
    """Removes template lines (>= template_min_chars, seen >= template_min_count times)."""

    name = "bloomforge template lines"
    ledger_name = "dedup_template_lines"
    cut_outcome = "template_lines"
    empty_reason = TEMPLATE_EMPTY

    def load(self) -> None:
        self._templates = load_templates(self.work_dir)

    def cut(self, doc: Document) -> tuple[str, int]:
        lang = str(doc.metadata.get("language", "unknown"))
        return strip_template_lines(doc.text, lang, self._templates, self.config.template_min_chars)


class SubstringRemoval(_CuttingStep):
    """Cuts the spans found by `SubstringIndex` (later copies of >= 50-byte substrings)."""

    name = "bloomforge exact substrings"
    ledger_name = "dedup_substrings"
    cut_outcome = "exact_substrings"
    empty_reason = SUBSTRINGS_EMPTY

    def load(self) -> None:
        spans = load_arrays(Path(self.work_dir) / "substrings" / "spans.npz")
        self._pos, self._offsets = spans["pos"], spans["offsets"]
        self._starts, self._ends = spans["starts"], spans["ends"]

    def cut(self, doc: Document) -> tuple[str, int]:
        pos = np.uint64(position(doc))
        i = int(np.searchsorted(self._pos, pos))
        if i == self._pos.size or self._pos[i] != pos:
            return doc.text, 0
        lo, hi = self._offsets[i], self._offsets[i + 1]
        spans = list(zip(self._starts[lo:hi].tolist(), self._ends[lo:hi].tolist(), strict=True))
        data = doc.text.encode("utf-8", "surrogatepass")
        return cut_spans(data, spans).decode("utf-8", "surrogatepass"), len(spans)


def read_cut_reports(work_dir: str, ledger_name: str) -> dict[str, dict[str, int]]:
    """Sum of the per-task reports of a cutting step: pieces and bytes cut per language."""
    total: dict[str, Counter] = {"pieces": Counter(), "bytes": Counter()}
    for path in sorted((Path(work_dir) / "report").glob(f"{ledger_name}-*.json")):
        for what, per_lang in json.loads(path.read_text()).items():
            total[what].update(per_lang)
    return {what: dict(sorted(c.items())) for what, c in total.items()}
