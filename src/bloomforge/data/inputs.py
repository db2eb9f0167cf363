"""Reading documents from the inputs users point bloomforge at: the one document reader.

In: input specs as typed on the command line, `[LANG=]PATH`, where PATH is a file, a glob or a
folder. Files are plain text (`.txt`, one document per line), jsonl (`.jsonl`, `.json`) or the
prepared output of `data prepare` (datatrove jsonl: `{"text", "id", "metadata": {"language",
"source", ...}}`), each optionally `.gz` or `.zst` compressed. A folder means every such file below
it. Out: `Document`s with provenance (source, language, file, line). Malformed records (invalid
UTF-8, bad JSON, missing or non-string text, empty text) are counted per reason in `ReadStats`
and skipped, never a crash; a missing file or a glob matching nothing is a one-line error.

Language, first match wins: the `LANG=` prefix, the record's `metadata.language` (or a top-level
`language`/`lang` key), the file name when it is a language code (`fr.txt`, `zh.jsonl.gz`), else
"und". Source: the record's `metadata.source`, else the file name without extensions.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bloomforge.errors import BloomforgeError

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
COMPRESSION_SUFFIXES = (".gz", ".zst")
_LANG_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z]{2,4})?$")


@dataclass(frozen=True)
class InputSpec:
    """One input file and the language the user gave it (None: from the record or the name)."""

    path: Path
    language: str | None = None


@dataclass(frozen=True)
class Document:
    text: str
    language: str
    source: str
    file: str
    line: int  # 1-based line in the (decompressed) file
    id: str | None = None


@dataclass
class ReadStats:
    """Documents read and records skipped, per reason, with the first few places of each."""

    documents: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)

    def merge(self, other: ReadStats) -> None:
        self.documents += other.documents
        self.bytes += other.bytes
        self.skipped.update(other.skipped)
        for reason, places in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(places[: max(0, 5 - len(mine))])

    def summary(self) -> str:
        """One line, e.g. `1200 documents; skipped 3 (2 bad JSON, 1 empty text)`."""
        if not self.skipped:
            return f"{self.documents} documents"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"{self.documents} documents; skipped {sum(self.skipped.values())} ({parts})"

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "bytes": self.bytes,
            "skipped": dict(self.skipped),
            "skipped_examples": self.examples,
        }


def is_input_file(path: Path) -> bool:
    name = path.name
    for comp in COMPRESSION_SUFFIXES:
        name = name.removesuffix(comp)
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)


def parse_inputs(specs: Iterable[str]) -> list[InputSpec]:
    """`["fr=fr.txt", "prepared/", "web/*.jsonl.gz"]` -> one InputSpec per file, sorted per spec."""
    out: list[InputSpec] = []
    for spec in specs:
        language, _, pattern = spec.rpartition("=") if "=" in spec else (None, "", spec)
        if language is not None and not _LANG_CODE.match(language):
            raise BloomforgeError(f"input '{spec}': '{language}' is not a language code")
        out.extend(InputSpec(p, language or None) for p in _expand(pattern))
    if not out:
        raise BloomforgeError("no inputs given")
    return out


def _expand(pattern: str) -> list[Path]:
    path = Path(pattern)
    if glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        files = [f for f in files if f.is_file()]
        if not files:
            raise BloomforgeError(f"{pattern}: no files match")
        return files
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_input_file(p))
        if not files:
            raise BloomforgeError(f"{path}: no .txt/.jsonl(.gz/.zst) files in this folder")
        return files
    if not path.exists():
        raise BloomforgeError(f"{path}: no such file")
    return [path]


def open_binary(path: Path) -> IO[bytes]:
    """A binary stream of the decompressed file, iterable by lines."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # noqa: SIM115
        return io.BufferedReader(reader)  # line iteration
    return open(path, "rb")


def _format_of(path: Path) -> str:
    name = path.name
    for comp in COMPRESSION_SUFFIXES:
        name = name.removesuffix(comp)
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"


def language_from_name(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    return stem if _LANG_CODE.match(stem) else None


def iter_documents(
    spec: InputSpec, stats: ReadStats | None = None, text_key: str = "text"
) -> Iterator[Document]:
    """The documents of one input file, in file order; bad records counted in `stats`."""
    stats = stats if stats is not None else ReadStats()
    path = spec.path
    fmt = _format_of(path)
    name_lang = language_from_name(path)
    name_source = path.name.split(".")[0]
    try:
        stream = open_binary(path)
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot open ({e.strerror or e})") from e
    with stream:
        for lineno, line in enumerate(stream, start=1):
            where = f"{path}:{lineno}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                stats.skip("invalid UTF-8", where)
                continue
            text = text.removesuffix("\n").removesuffix("\r")
            language, source, doc_id = spec.language, name_source, None
            if fmt == "jsonl":
                if not text.strip():
                    continue  # blank lines between records are not records
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    stats.skip("bad JSON", where)
                    continue
                if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
                    stats.skip(f"missing text key '{text_key}'", where)
                    continue
                meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
                language = language or meta.get("language") or record.get("language")
                language = language or record.get("lang")
                source = meta.get("source") or record.get("source") or source
                doc_id = record.get("id")
                text = record[text_key]
            if not text.strip():
                stats.skip("empty text", where)
                continue
            stats.documents += 1
            stats.bytes += len(text.encode("utf-8"))
            yield Document(
                text=text,
                language=str(language or name_lang or "und"),
                source=str(source),
                file=str(path),
                line=lineno,
                id=None if doc_id is None else str(doc_id),
            )


def read_documents(
    specs: Iterable[InputSpec], stats: ReadStats | None = None, text_key: str = "text"
) -> Iterator[Document]:
    for spec in specs:
        yield from iter_documents(spec, stats, text_key)
