"""Reading documents from the inputs users point bloomforge at: the one document reader.

In: input specs as typed on the command line, `[NAME=]PATH` (one argument, `add_input_argument`,
for `data prepare`, `data tokenize`, `tokenizer train` and `tokenizer fertility`), where PATH is
a file, a glob or a folder. Files are plain text (`.txt`, one document per line), jsonl
(`.jsonl`, `.json`), parquet (`.parquet`, read with pyarrow, one document per row), web
archives (`.warc`: one document per HTML response, its main text extracted; `.wet`: one per
conversion record; `documents.warc`) or the prepared output of `data prepare` (datatrove
jsonl: `{"text", "id", "metadata": {"language", "source", ...}}`); text, jsonl and web archives
optionally `.gz` or `.zst` compressed. A folder means every such file below it. Out:
`Document`s with provenance (source, language, file, line or 1-based parquet row or WARC
record, the record's own id and url, and for web archives the crawl date).
Malformed records (invalid UTF-8, bad JSON, missing or non-string text, empty text, a corrupt or
truncated file; in web archives also non-response records, non-text MIME types, charset errors,
bad HTML and empty extractions: see `bloomforge.documents.warc`) are counted per reason in
`ReadStats`, passed to `on_skip` when given (so callers can set them aside), and skipped, never
a crash; a missing file or a glob matching nothing is a
one-line error. With `max_bytes`, a record larger than that (a line of a text or jsonl file, the
text of a parquet row) is skipped the same way as `too_large`, and never held in memory whole:
one 50 MB line otherwise costs minutes and gigabytes in every step after the reader.

`NAME=PATH`: a NAME that is a language code (ISO 639-1, or `code` for programming languages) is
the language of PATH's documents; any other NAME names their source. Language, first match
wins: a language-code NAME, the record's `metadata.language` (or a top-level `language`/`lang`
key), the file name when it looks like a language code (`fr.txt`, `zh.jsonl.gz`), else "und"
(`data prepare` identifies it instead). Source: a NAME that is not a language code, else the
record's `metadata.source`, else the file name without extensions. (`data prepare` makes each
input one source named NAME, language code or not, else after its first file.)
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bloomforge.errors import BloomforgeError

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
WARC_SUFFIXES = (".warc", ".wet")  # .warc.wet.gz: a WET file
FORMATS = ("text", "jsonl", "parquet", "warc", "wet")
COMPRESSION_SUFFIXES = (".gz", ".zst")
_LANG_CODE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z]{2,4})?$")  # a file name read as a language

# ISO 639-1, the two-letter codes (the `language` metadata of every prepared document is one of
# these, or "unknown"): https://www.loc.gov/standards/iso639-2/php/code_list.php
_ISO_639_1 = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi
    ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks
    ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl
    nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl
    sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve
    vi vo wa wo xh yi yo za zh zu
"""
ISO_639_1 = frozenset(_ISO_639_1.split())
# Programming code (ROOTS' 13 programming languages were one category).
CODE = "code"
# The NAMEs of `NAME=PATH` that are the language of PATH's documents (others name a source).
LANGUAGES = ISO_639_1 | {CODE}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a source name: a folder name, a key

INPUT_METAVAR = "[NAME=]PATH"
INPUT_HELP = (
    "documents: a file, glob or folder (txt: one per line; jsonl, parquet, warc/wet; .gz/.zst; "
    "a `data prepare` folder); repeatable. A NAME that is a language code (ISO 639-1, or "
    "'code') is their language; any other NAME names their source, and their language is each "
    "record's, then the file name's (fr.txt), then data prepare's language identification "
    "('und' elsewhere)"
)


@dataclass(frozen=True)
class InputSpec:
    """One input file, the language the user gave it (None: from the record or the name) and
    the source name (None: from the record or the file name)."""

    path: Path
    language: str | None = None
    source: str | None = None


def add_input_argument(
    parser: argparse.ArgumentParser | argparse._ActionsContainer,
    flag: str = "--input",
    *,
    required: bool = False,
    help: str | None = None,
) -> None:
    """The one `[NAME=]PATH` option of the commands that read documents (`split_input` and
    `parse_inputs` read it); `help` goes before the shared text."""
    parser.add_argument(
        flag,
        nargs="+",
        action="extend",
        required=required,
        metavar=INPUT_METAVAR,
        help=f"{help}; {INPUT_HELP}" if help else INPUT_HELP,
    )


def split_input(spec: str) -> tuple[str | None, str]:
    """`NAME=PATH` -> (NAME, PATH), `PATH` -> (None, PATH). NAME is what comes before the first
    '=' when that is not a path (holds no '/'), so `runs/lr=0.1/docs.jsonl` is a PATH."""
    name, path = _split(spec)
    if name is None:
        return None, path
    if not name or not path:
        raise BloomforgeError(f"input '{spec}': expected NAME=PATH or PATH")
    if not _NAME.match(name):
        raise BloomforgeError(
            f"input '{spec}': '{name}' is not a usable name (letters, digits, '_', '-', '.')"
        )
    return name, path


def _split(spec: str) -> tuple[str | None, str]:
    """`split_input` before it checks NAME."""
    name, sep, path = spec.partition("=")
    if not sep or "/" in name or os.sep in name:
        return None, spec
    return name, path


def spec_paths(specs: Iterable[str]) -> list[str]:
    """The PATHs of `[NAME=]PATH` specs (also `--reference NAME=PATH`, `--train-text LANG=PATH`),
    split where `split_input` splits them, globs expanded, for `outputs.claim_output(inputs=)`:
    an output may not be, or be inside, what a command reads. Never an error: a bad NAME is the
    reader's to report."""
    paths: list[str] = []
    for spec in specs:
        pattern = _split(spec)[1]
        paths.extend(glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern])
    return paths


def language_of_name(name: str | None) -> str | None:
    """The language a `NAME=` gives its documents: NAME when it is a language code, else None
    (NAME is then their source's name)."""
    return name if name in LANGUAGES else None


@dataclass(frozen=True)
class Document:
    text: str
    language: str
    source: str
    file: str
    line: int  # 1-based line in the (decompressed) file, 1-based parquet row or WARC record
    id: str | None = None
    url: str | None = None
    date: str | None = None  # web archives: WARC-Date, when the page was crawled


# on_skip(reason, line, raw record, size in bytes): a skipped record, for callers that write them
# aside; for `too_large` the raw record is its first `TOO_LARGE_HEAD` characters
SkipHandler = Callable[[str, int, str, int], None]
TOO_LARGE = "too_large"
TOO_LARGE_HEAD = 1000
_CHUNK = 1 << 20  # how a too large line is read past: a megabyte at a time


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
    return name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES + WARC_SUFFIXES)


def parse_inputs(specs: Iterable[str]) -> list[InputSpec]:
    """`["fr=fr.txt", "prepared/", "web=crawl/*.jsonl.gz"]` -> one InputSpec per file, sorted
    per spec (`split_input`, `language_of_name`)."""
    out: list[InputSpec] = []
    for spec in specs:
        name, pattern = split_input(spec)
        language = language_of_name(name)
        source = None if language else name
        out.extend(InputSpec(p, language, source) for p in _expand(pattern))
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
            raise BloomforgeError(
                f"{path}: no .txt/.jsonl/.warc/.wet(.gz/.zst)/.parquet files in this folder"
            )
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


def format_of(path: Path) -> str:
    """ "text", "jsonl", "parquet", "warc" or "wet" from the name (compression suffixes ignored)."""
    name = path.name
    for comp in COMPRESSION_SUFFIXES:
        name = name.removesuffix(comp)
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(".wet"):
        return "wet"
    if name.endswith(".warc"):
        return "warc"
    return "jsonl" if name.endswith(JSONL_SUFFIXES) else "text"


def language_from_name(path: Path) -> str | None:
    stem = path.name.split(".")[0]
    return stem if _LANG_CODE.match(stem) else None


def iter_documents(
    spec: InputSpec,
    stats: ReadStats | None = None,
    text_key: str = "text",
    *,
    id_key: str = "id",
    url_key: str = "url",
    fmt: str | None = None,
    on_skip: SkipHandler | None = None,
    max_bytes: int | None = None,
) -> Iterator[Document]:
    """The documents of one input file, in file order; bad records counted in `stats`.

    `fmt` ("text", "jsonl", "parquet", "warc", "wet") overrides the format guessed from the name.
    `max_bytes`: records larger than this are skipped as `too_large` (None or 0: no limit).
    """
    stats = stats if stats is not None else ReadStats()
    path = spec.path
    fmt = fmt or format_of(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}")
    name_lang = language_from_name(path)
    name_source = path.name.split(".")[0]

    def skip(reason: str, lineno: int, raw: str, size: int | None = None) -> None:
        stats.skip(reason, f"{path}:{lineno}")
        if on_skip is not None:
            size = len(raw.encode("utf-8", "surrogatepass")) if size is None else size
            on_skip(reason, lineno, raw, size)

    if fmt == "parquet":
        records = _parquet_records(path, skip, text_key, max_bytes or None)
    elif fmt in ("warc", "wet"):
        records = _warc_records(path, fmt, skip, max_bytes or None)
        text_key, id_key, url_key = "text", "id", "url"  # the keys _warc_records gives
    else:
        records = _line_records(path, fmt, skip, max_bytes or None)
    for lineno, text, record in records:
        raw = text
        language, source, doc_id, url = spec.language, spec.source or name_source, None, None
        date = record.get("date") if fmt in ("warc", "wet") and record is not None else None
        if record is not None:
            if not isinstance(record.get(text_key), str):
                skip(f"missing text key '{text_key}'", lineno, text or _raw(record))
                continue
            meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
            language = language or meta.get("language") or record.get("language")
            language = language or record.get("lang")
            source = spec.source or meta.get("source") or record.get("source") or source
            doc_id = record.get(id_key)
            url = record.get(url_key) or meta.get(url_key)
            text = record[text_key]
        if not text.strip():
            skip("empty text", lineno, raw)
            continue
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # a JSON "\ud800" escape: not text any writer can encode
            skip("lone surrogate", lineno, raw.encode("utf-8", "backslashreplace").decode())
            continue
        stats.documents += 1
        stats.bytes += size
        yield Document(
            text=text,
            language=str(language or name_lang or "und"),
            source=str(source),
            file=str(path),
            line=lineno,
            id=None if doc_id is None else str(doc_id),
            url=None if url is None else str(url),
            date=date,
        )


# (line or row, the text (plain text) or the raw line (jsonl), the parsed record or None)
_Records = Iterator[tuple[int, str, dict | None]]
_Skip = Callable[..., None]  # skip(reason, line, raw, size=None)


def _raw(record: object) -> str:
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except ValueError:
        return repr(record)


def _lines(stream: IO[bytes], max_bytes: int | None) -> Iterator[tuple[bytes, int]]:
    """(line, its size without the line break) per line; a line over `max_bytes` comes as its
    first `max_bytes` + 1 bytes, the rest read past a chunk at a time and never kept."""
    if max_bytes is None:
        for line in stream:
            yield line, len(line) - _break(line)
        return
    while line := stream.readline(max_bytes + 1):
        if len(line) <= max_bytes or line.endswith(b"\n"):
            yield line, len(line) - _break(line)
            continue
        size, last = len(line), line[-2:]
        while rest := stream.readline(_CHUNK):
            size, last = size + len(rest), (last + rest)[-2:]
            if rest.endswith(b"\n"):
                break
        yield line, size - _break(last)


def _break(line: bytes) -> int:
    """The length of the line break ending `line` (\\n or \\r\\n), as the reader removes it."""
    return 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0


def _line_records(path: Path, fmt: str, skip: _Skip, max_bytes: int | None) -> _Records:
    try:
        stream = open_binary(path)
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot open ({e.strerror or e})") from e
    lineno = 0
    with stream:
        try:
            for lineno, (line, size) in enumerate(_lines(stream, max_bytes), start=1):
                if max_bytes is not None and size > max_bytes:
                    head = line[: TOO_LARGE_HEAD * 4].decode("utf-8", "replace")
                    skip(TOO_LARGE, lineno, head[:TOO_LARGE_HEAD], size)
                    continue
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    raw = line.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
                    skip("invalid UTF-8", lineno, raw)
                    continue
                text = text.removesuffix("\n").removesuffix("\r")
                if fmt == "text":
                    yield lineno, text, None
                    continue
                if not text.strip():
                    continue  # blank lines between records are not records
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    skip("bad JSON", lineno, text)
                    continue
                yield lineno, text, record if isinstance(record, dict) else {"": record}
        except (OSError, EOFError, ValueError) as e:  # truncated gzip/zstd, corrupt stream
            skip("corrupt or truncated file", lineno + 1, f"{type(e).__name__}: {e}")


def _warc_records(path: Path, fmt: str, skip: _Skip, max_bytes: int | None) -> _Records:
    from bloomforge.documents import warc

    try:
        # warcio reads gzip members itself (per-record .warc.gz); zstd through open_binary
        raw = fmt == "warc" and path.suffix != ".zst"
        stream = open(path, "rb") if raw else open_binary(path)  # noqa: SIM115
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot open ({e.strerror or e})") from e
    with stream:
        if fmt == "wet":
            records = warc.iter_wet_records(stream, path, skip, max_bytes)
        else:
            size = path.stat().st_size if raw else None
            records = warc.iter_records(stream, path, skip, max_bytes, size)
        for rec in records:
            record = {"text": rec.text, "id": rec.record_id, "url": rec.url, "date": rec.date}
            yield rec.number, rec.text, record


def _parquet_records(path: Path, skip: _Skip, text_key: str, max_bytes: int | None) -> _Records:
    import pyarrow.parquet as pq

    row = 0
    try:
        with pq.ParquetFile(path) as table:
            for batch in table.iter_batches(batch_size=1024):
                for record in batch.to_pylist():
                    row += 1
                    for key, value in record.items():
                        if isinstance(value, bytes):  # binary column: text only if valid UTF-8
                            try:
                                record[key] = value.decode("utf-8")
                            except UnicodeDecodeError:
                                record[key] = None
                                if key == text_key:
                                    raw = value.decode("utf-8", "backslashreplace")
                                    skip("invalid UTF-8", row, raw)
                                    break
                    else:
                        text = record.get(text_key)
                        if max_bytes is not None and isinstance(text, str):
                            size = len(text.encode("utf-8", "surrogatepass"))
                            if size > max_bytes:
                                skip(TOO_LARGE, row, text[:TOO_LARGE_HEAD], size)
                                continue
                        yield row, "", record
    except FileNotFoundError as e:
        raise BloomforgeError(f"{path}: no such file") from e
    except (OSError, ValueError) as e:  # not parquet, truncated, bad schema
        skip("corrupt or truncated file", row + 1, f"{type(e).__name__}: {e}")


def read_documents(
    specs: Iterable[InputSpec], stats: ReadStats | None = None, text_key: str = "text"
) -> Iterator[Document]:
    for spec in specs:
        yield from iter_documents(spec, stats, text_key)
