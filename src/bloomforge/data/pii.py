"""PII redaction as BigScience did for ROOTS: KEY, EMAIL, USER and IP spans -> `PI:<TYPE>`.

In: text (`redact`), or datatrove Documents (`PIIRedactor`, a pipeline step). Out: the text with
each span replaced by `PI:KEY`, `PI:EMAIL`, `PI:USER` or `PI:IP`, and the spans found
(type, start, end in the original text, original string). The step writes the originals only to
`RESTRICTED_DIR/SOURCE/RANK.jsonl` and counts spans per source x language x type in its stats
(`pii|SOURCE|LANGUAGE|TYPE`), documents in the ledger (step "pii").

The patterns are BigScience's "MST" regexes (bigscience-workshop/data-preparation,
preprocessing/training/02_pii/bigscience_pii_detect_redact.py, the `high_risk_tags` KEY, EMAIL,
USER, IP_ADDRESS that were applied), rebuilt from their parts in `bloomforge.data.pii_patterns`.
Where this differs, and why:
- Boundaries are look-arounds rather than consumed characters, so two PII spans separated by one
  space are both found (BigScience's pattern consumed the space and missed the second).
- Spans are replaced where they were found; BigScience's `str.replace(match, tag)` also replaced
  every other occurrence of the same string in the document. Overlapping spans: the earliest
  wins, then the longest, then EMAIL > IP > USER > KEY.
- IP candidates are validated with `ipaddress` (BigScience only required a digit). A dotted quad
  that is part of a longer dotted number (`1.2.3.4.5`, `v2.0.1.3.7`) is a version number, not an
  address, and is kept; a lone valid quad (`1.2.3.4`) is redacted, as BigScience did. Private,
  loopback and documentation addresses are redacted by default, as BigScience did
  (`public_ips_only=True` keeps them, as datatrove's PIIFormatter does).
- A KEY inside a URL (its whitespace-delimited token holds "://" or "www.") is kept: the path
  of `creativecommons.org/licenses/by-nc-sa/2` is not a secret. BigScience left this check as
  a TODO (`is_website`) and redacted URL paths.
- Time linear in the text. BigScience's KEY and EMAIL regexes backtrack: 6,400 digits in a row
  took 3.7 s, 30,000 took 80 s. `bloomforge.data.pii_patterns` finds the same spans
  without that.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import regex
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from bloomforge import files
from bloomforge.data.ledger import IN, KEPT, record
from bloomforge.data.pii_patterns import spans

TYPES = ("KEY", "EMAIL", "USER", "IP")
_PRIORITY = {"EMAIL": 0, "IP": 1, "USER": 2, "KEY": 3}
PII_STAT = "pii"
_DOTTED_BEFORE = regex.compile(r"\d\.$")
_DOTTED_AFTER = regex.compile(r"^\.\d")


@dataclass(frozen=True)
class PIIMatch:
    type: str
    start: int
    end: int
    text: str


def _valid_ip(text: str, start: int, end: int, public_only: bool) -> bool:
    span = text[start:end]
    if not any(c.isdigit() for c in span):
        return False  # "::" and friends (BigScience's ip_has_digit)
    try:
        address = ipaddress.ip_address(span.split("%")[0])
    except ValueError:
        return False
    if address.version == 4 and (
        _DOTTED_BEFORE.search(text[max(0, start - 2) : start])
        or _DOTTED_AFTER.match(text[end : end + 2])
    ):
        return False  # part of a longer dotted number: a version, not an address
    return address.is_global or not public_only


_TOKEN_BREAK = regex.compile(r"[ \t\n\r]")


class _Urls:
    """Whether a span's whitespace-delimited token holds "://" or "www." (a URL).

    Marks and token breaks are found once per text and looked up by bisection: asking each
    span's token anew would read a long token once per span in it.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.marks: list[tuple[int, int]] | None = None
        self.breaks: list[int] = []

    def __call__(self, start: int, end: int) -> bool:
        if self.marks is None:
            # "://" and "www." never overlap: sorted by start, the marks are sorted by end too
            self.marks = sorted(_occurrences(self.text, "://") + _occurrences(self.text, "www."))
            if self.marks:
                self.breaks = [m.start() for m in _TOKEN_BREAK.finditer(self.text)]
        if not self.marks:
            return False
        i = bisect.bisect_left(self.breaks, start)
        left = self.breaks[i - 1] if i else -1
        j = bisect.bisect_left(self.breaks, end)
        right = self.breaks[j] if j < len(self.breaks) else len(self.text)
        k = bisect.bisect_left(self.marks, (left + 1, 0))
        return k < len(self.marks) and self.marks[k][1] <= right


def _occurrences(text: str, mark: str) -> list[tuple[int, int]]:
    out, i = [], text.find(mark)
    while i >= 0:
        out.append((i, i + len(mark)))
        i = text.find(mark, i + len(mark))
    return out


def find_pii(
    text: str, types: tuple[str, ...] | list[str] = TYPES, public_ips_only: bool = False
) -> list[PIIMatch]:
    """Non-overlapping PII spans of `text`, in text order; time linear in len(text)."""
    found: list[PIIMatch] = []
    in_url = _Urls(text)
    for kind in types:
        for start, end in spans(kind, text):
            if start == end:
                continue
            if kind == "IP" and not _valid_ip(text, start, end, public_ips_only):
                continue
            if kind == "KEY" and in_url(start, end):
                continue
            found.append(PIIMatch(kind, start, end, text[start:end]))
    found.sort(key=lambda m: (m.start, -(m.end - m.start), _PRIORITY[m.type]))
    kept: list[PIIMatch] = []
    for m in found:
        if not kept or m.start >= kept[-1].end:
            kept.append(m)
    return kept


def redact(
    text: str, types: tuple[str, ...] | list[str] = TYPES, public_ips_only: bool = False
) -> tuple[str, list[PIIMatch]]:
    """`text` with every PII span replaced by `PI:<TYPE>`, and the spans (original offsets)."""
    matches = find_pii(text, types, public_ips_only)
    if not matches:
        return text, matches
    parts, last = [], 0
    for m in matches:
        parts += [text[last : m.start], f"PI:{m.type}"]
        last = m.end
    parts.append(text[last:])
    return "".join(parts), matches


def pii_stat_key(source: str, language: str, kind: str) -> str:
    return f"{PII_STAT}|{source}|{language}|{kind}"


class PIIRedactor(PipelineStep):
    """Redacts PII in each document; originals go only to the restricted folder."""

    name = "bloomforge PII redaction"
    type = "✂️ - FORMAT"
    ledger_name = "pii"

    def __init__(
        self,
        restricted_dir: str,
        source: str,
        types: tuple[str, ...] | list[str] = TYPES,
        public_ips_only: bool = False,
    ) -> None:
        super().__init__()
        unknown = sorted(set(types) - set(TYPES))
        if unknown:
            raise ValueError(f"unknown PII types {unknown}; known: {', '.join(TYPES)}")
        self.restricted_dir = restricted_dir
        self.source = source
        self.types = tuple(types)
        self.public_ips_only = public_ips_only

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        # whole or absent: no file when no PII was found (an older list is removed)
        with files.side_file(Path(self.restricted_dir) / self.source, rank) as restricted:
            for doc in data:
                record(self, doc, IN)
                with self.track_time():
                    text, matches = redact(doc.text, self.types, self.public_ips_only)
                language = str(doc.metadata.get("language", "unknown"))
                for m in matches:
                    self.stat_update(pii_stat_key(self.source, language, m.type))
                    entry = {"id": doc.id, "type": m.type, "start": m.start, "end": m.end}
                    entry |= {"original": m.text, "language": language}
                    restricted.write(json.dumps(entry, ensure_ascii=False) + "\n")
                if matches:
                    self.stat_update("documents_with_pii")
                    doc.text = text
                record(self, doc, KEPT)  # bytes after redaction
                yield doc
