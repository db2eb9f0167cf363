"""PII redaction as BigScience did for ROOTS: KEY, EMAIL, USER and IP spans -> `PI:<TYPE>`.

In: text (`redact`), or datatrove Documents (`PIIRedactor`, a pipeline step). Out: the text with
each span replaced by `PI:KEY`, `PI:EMAIL`, `PI:USER` or `PI:IP`, and the spans found
(type, start, end in the original text, original string). The step writes the originals only to
`RESTRICTED_DIR/SOURCE/RANK.jsonl` and counts spans per source x language x type in its stats
(`pii|SOURCE|LANGUAGE|TYPE`), documents in the ledger (step "pii").

The patterns are BigScience's "MST" regexes (bigscience-workshop/data-preparation,
preprocessing/training/02_pii/bigscience_pii_detect_redact.py, the `high_risk_tags` KEY, EMAIL,
USER, IP_ADDRESS that were applied), rebuilt here from their parts. Where this differs, and why:
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
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

import regex
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from bloomforge.data.ledger import IN, KEPT, record

TYPES = ("KEY", "EMAIL", "USER", "IP")
_PRIORITY = {"EMAIL": 0, "IP": 1, "USER": 2, "KEY": 3}
PII_STAT = "pii"

# Characters BigScience allowed around a span (besides start/end of line): whitespace, the
# punctuation below, and Han characters (Chinese text has no spaces).
_AROUND = r"""\s@?,!;:'")(.\p{Han}"""


def _between(body: str, before: str = _AROUND, after: str | None = _AROUND) -> str:
    tail = "" if after is None else rf"(?=$|[{after}])"
    return rf"(?<=^|[{before}])(?:{body}){tail}"


# KEY: >= 4 letter/digit alternations (api keys, hashes) or >= 3 groups of digits/capitals
# (BigScience regex101.com/r/JQkmh8/5).
_KEY_MIXED = r"(?:[A-Za-z]+[\p{Nd}\p{Pd}/+=:_]+|[\p{Nd}\p{Pd}/+=:]+[A-Za-z]+){4,}"
_KEY_GROUPS = r"(?:(?:\p{Nd}{3,}|[A-Z]+\p{Nd}+[A-Z]*|\p{Nd}+[A-Z]+\p{Nd}*)[ \p{Pd}]?){3,}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = "|".join(  # every compressed form (BigScience's ipv6_pattern)
    (
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?:(?::{_H}){{1,7}}|:)",
        r"fe80:(?::[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]+",
        rf"::(?:ffff(?::0{{1,4}})?:)?{_IPV4}",
        rf"(?:{_H}:){{1,4}}:{_IPV4}",
    )
)
# EMAIL: regex101.com/r/OZdSUu/5; USER: an @handle of >= 3 characters (regex101.com/r/mOqi1s/3).
_EMAIL = r"""[^\s@,?!;:)(]+@[^,\s!?;]+[^\s'"@,?!;:)(.]"""
_USER = r"""@[^\s@,?!;:'")(]{3,}"""

PATTERNS: dict[str, regex.Pattern] = {
    "KEY": regex.compile(_between(rf"{_KEY_MIXED}|{_KEY_GROUPS}"), regex.MULTILINE),
    "EMAIL": regex.compile(
        _between(_EMAIL, before=r"""\s'"@,?!;:)(.\p{Han}""", after=r"\s@,?!;:)(.\p{Han}"),
        regex.MULTILINE,
    ),
    "USER": regex.compile(
        _between(_USER, before=r"""\s@,?!;:'")(\p{Han}""", after=None), regex.MULTILINE
    ),
    # POSIX: leftmost-longest, so a full IPv6 address wins over a shorter alternative's prefix
    "IP": regex.compile(_between(rf"{_IPV4}|{_IPV6}"), regex.MULTILINE | regex.POSIX),
}
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


def _in_url(text: str, start: int, end: int) -> bool:
    left = max(text.rfind(c, 0, start) for c in " \t\n\r")
    right = min((i for i in (text.find(c, end) for c in " \t\n\r") if i >= 0), default=len(text))
    token = text[left + 1 : right]
    return "://" in token or "www." in token


def find_pii(
    text: str, types: tuple[str, ...] | list[str] = TYPES, public_ips_only: bool = False
) -> list[PIIMatch]:
    """Non-overlapping PII spans of `text`, in text order."""
    found: list[PIIMatch] = []
    for kind in types:
        for m in PATTERNS[kind].finditer(text):
            start, end = m.span()
            if start == end:
                continue
            if kind == "IP" and not _valid_ip(text, start, end, public_ips_only):
                continue
            if kind == "KEY" and _in_url(text, start, end):
                continue
            found.append(PIIMatch(kind, start, end, m.group()))
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
        final = Path(self.restricted_dir) / self.source / f"{rank:05d}.jsonl"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        found = 0
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as restricted:
            for doc in data:
                record(self, doc, IN)
                with self.track_time():
                    text, matches = redact(doc.text, self.types, self.public_ips_only)
                language = str(doc.metadata.get("language", "unknown"))
                for m in matches:
                    found += 1
                    self.stat_update(pii_stat_key(self.source, language, m.type))
                    entry = {"id": doc.id, "type": m.type, "start": m.start, "end": m.end}
                    entry |= {"original": m.text, "language": language}
                    restricted.write(json.dumps(entry, ensure_ascii=False) + "\n")
                if matches:
                    self.stat_update("documents_with_pii")
                    doc.text = text
                record(self, doc, KEPT)  # bytes after redaction
                yield doc
        if found:
            os.replace(tmp, final)
        else:
            tmp.unlink()
            final.unlink(missing_ok=True)
