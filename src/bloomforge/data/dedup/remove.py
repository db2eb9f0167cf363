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

from datatrove.data import Document, DocumentsPipeline

from bloomforge import files
from bloomforge.data.ledger import IN, KEPT, CountedFilter, ledger_key, record

from .config import DedupConfig
from .find import REASONS
from .io import SPANS, TEMPLATES, DedupStep, find_position, language
from .substrings import cut_spans
from .text import strip_template_lines

TEMPLATE_EMPTY = "template_lines_empty"
SUBSTRINGS_EMPTY = "exact_substrings_empty"


class DuplicateFilter(DedupStep, CountedFilter):
    """Removes the documents that `ResolveDuplicates` marked with one of `reasons`."""

    name = "bloomforge dedup filter"

    def __init__(
        self, work_dir: str, config: DedupConfig, ledger_name: str, reasons: tuple[str, ...]
    ) -> None:
        super().__init__(work_dir, config)
        self.ledger_name = ledger_name
        self.reasons = tuple(reasons)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        reason = REASONS[self.reason_code(doc)]
        return (False, reason) if reason in self.reasons else True


class _CuttingStep(DedupStep):
    """A step that cuts text from documents and drops those left empty, with a ledger."""

    ledger_name = "dedup_cut"
    cut_outcome = "cut"
    empty_reason = "empty"

    def cut(self, doc: Document) -> tuple[str, int]:
        """New text and the number of pieces (lines, spans) cut."""
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
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
            lang = language(doc)
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
        report_file = self.work_file(f"report/{self.ledger_name}-{rank:05d}.json")
        files.write_json(report_file, report, sort_keys=True, ensure_ascii=True, newline=False)


class TemplateLineRemoval(_CuttingStep):
    """Removes template lines (>= template_min_chars, seen >= template_min_count times)."""

    name = "bloomforge template lines"
    ledger_name = "dedup_template_lines"
    cut_outcome = "template_lines"
    empty_reason = TEMPLATE_EMPTY

    def cut(self, doc: Document) -> tuple[str, int]:
        templates = self.arrays(TEMPLATES)["keys"]
        min_chars = self.config.template_min_chars
        return strip_template_lines(doc.text, language(doc), templates, min_chars)


class SubstringRemoval(_CuttingStep):
    """Cuts the spans found by `SubstringIndex` (later copies of >= 50-byte substrings)."""

    name = "bloomforge exact substrings"
    ledger_name = "dedup_substrings"
    cut_outcome = "exact_substrings"
    empty_reason = SUBSTRINGS_EMPTY

    def cut(self, doc: Document) -> tuple[str, int]:
        found = self.arrays(SPANS)
        i = find_position(found["pos"], doc)
        if i is None:
            return doc.text, 0
        lo, hi = found["offsets"][i], found["offsets"][i + 1]
        starts, ends = found["starts"][lo:hi].tolist(), found["ends"][lo:hi].tolist()
        spans = list(zip(starts, ends, strict=True))
        data = doc.text.encode("utf-8", "surrogatepass")
        return cut_spans(data, spans).decode("utf-8", "surrogatepass"), len(spans)


def read_cut_reports(work_dir: str, ledger_name: str) -> dict[str, dict[str, int]]:
    """Sum of the per-task reports of a cutting step: pieces and bytes cut per language."""
    total: dict[str, Counter] = {"pieces": Counter(), "bytes": Counter()}
    for path in sorted((Path(work_dir) / "report").glob(f"{ledger_name}-*.json")):
        for what, per_lang in json.loads(path.read_text()).items():
            total[what].update(per_lang)
    return {what: dict(sorted(c.items())) for what, c in total.items()}
