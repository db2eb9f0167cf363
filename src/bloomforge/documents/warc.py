"""Web archives -> text records with provenance: WARC (HTML responses) and WET (extracted text).

In: a `.warc` / `.warc.gz` file, read record by record with warcio (the library datatrove's
`WarcReader` uses), or a `.wet` / `.warc.wet.gz` file, read line by line as cc_net does
(facebookresearch/cc_net, `cc_net/process_wet_file.py`, `group_by_docs`: a record starts at a
`WARC/1.0` line, its headers end at the first blank line, its text at the next `WARC/1.0` line;
`Content-Length` is not trusted, and hand-made or re-encoded WET files get it wrong). Out: one
`WebRecord` per usable record, with its 1-based record number in the file, the text, and
provenance: `WARC-Target-URI` (url), `WARC-Date` (the crawl date) and `WARC-Record-ID`.

- `response` and `resource` records: the payload is decoded (the charset of the HTTP
  `Content-Type`, else of a `<meta charset>`, else UTF-8, else resiliparse's detector) and its
  main text extracted with resiliparse (`extract_plain_text(main_content=True)`): about 16x
  faster than trafilatura, datatrove's extractor, on the same pages (bench/warc_extract.py).
- `conversion` records (WET, Common Crawl's own extraction): the payload is the text, UTF-8.

Every other record is set aside through `skip(reason, record_number, head, size)` with one of
these reasons, never dropped silently and never a crash (the head is the record's WARC headers
and the first bytes of its payload):
`not a response record` (warcinfo, request, metadata, revisit), `HTTP status not 2xx`,
`non-text MIME type` (image/png, application/pdf...), `charset error` (an unknown charset name,
or bytes that do not decode in the declared or detected charset), `bad HTML` (binary data
served as HTML, e.g. a gzip body that does not decompress, or a page the parser rejects),
`empty extraction` (no text left), `too_large`
(payload over `max_bytes`), and `corrupt or truncated file` (the rest of the file is unreadable).
"""

from __future__ import annotations

import codecs
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from warcio.archiveiterator import ArchiveIterator
from warcio.exceptions import ArchiveLoadFailed

NOT_RESPONSE = "not a response record"
HTTP_STATUS = "HTTP status not 2xx"
NOT_TEXT = "non-text MIME type"
CHARSET = "charset error"
BAD_HTML = "bad HTML"
EMPTY = "empty extraction"
CORRUPT = "corrupt or truncated file"
TOO_LARGE = "too_large"  # the reason the other readers use (bloomforge.documents.inputs)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = HTML_TYPES | {"text/plain"}
HEAD_CHARS = 1000  # what of a set-aside record is kept: headers and the start of the payload
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")  # C0 controls no text page holds
_BINARY_SHARE = 0.01

# skip(reason, record number, head of the record, size of its payload in bytes)
Skip = Callable[[str, int, str, int], None]


@dataclass(frozen=True)
class WebRecord:
    number: int  # 1-based record number in the file
    text: str
    url: str | None
    date: str | None
    record_id: str | None


def iter_records(
    stream, path: Path, skip: Skip, max_bytes: int | None = None, size: int | None = None
) -> Iterator[WebRecord]:
    """The text records of one WARC stream (gzip members are read by warcio itself); `size`:
    the stream's length in bytes, to tell a file cut short (warcio stops there silently)."""
    number = 0
    try:
        records = ArchiveIterator(stream)
        for number, rec in enumerate(records, start=1):
            out = _record(rec, number, skip, max_bytes)
            if out is _TRUNCATED:  # warcio hands a cut last record over as if it were whole
                skip(CORRUPT, number, f"{path}: record {number} ends early"[:HEAD_CHARS], 0)
                return
            if out is not None:
                yield out
        if size is not None and records.offset < size:  # a gzip member cut in its headers
            skip(CORRUPT, number + 1, f"{path}: unreadable after byte {records.offset}", 0)
    except (ArchiveLoadFailed, OSError, EOFError, ValueError, zlib.error) as e:
        skip(CORRUPT, number + 1, f"{path}: {type(e).__name__}: {e}"[:HEAD_CHARS], 0)


_TRUNCATED = object()


def _record(rec, number: int, skip: Skip, max_bytes: int | None) -> WebRecord | object | None:
    headers = rec.rec_headers
    rec_type = rec.rec_type
    if rec_type not in ("response", "resource", "conversion"):
        if _cut(rec):
            return _TRUNCATED
        skip(NOT_RESPONSE, number, _head(rec, b""), _length(rec))
        return None
    content_type = headers.get_header("WARC-Identified-Payload-Type")
    if rec_type == "response" and rec.http_headers is not None:
        status = rec.http_headers.get_statuscode() or ""
        if not status.startswith("2"):
            if _cut(rec):
                return _TRUNCATED
            skip(HTTP_STATUS, number, _head(rec, b""), _length(rec))
            return None
        declared = rec.http_headers.get_header("Content-Type")
    else:
        declared = headers.get_header("Content-Type")
    mime, charset = _parse_content_type(declared)
    mime = (content_type or "").split(";")[0].strip().lower() or mime
    content = rec.content_stream()  # HTTP chunking and Content-Encoding undone by warcio
    try:
        payload = content.read() if max_bytes is None else content.read(max_bytes + 1)
        rest = sum(len(c) for c in iter(lambda: content.read(1 << 20), b"")) if max_bytes else 0
    except (OSError, ValueError, EOFError, zlib.error):  # a body warcio cannot decode
        if _cut(rec):
            return _TRUNCATED
        skip(BAD_HTML, number, _head(rec, b""), _length(rec))
        return None
    if _cut(rec):
        return _TRUNCATED
    if max_bytes is not None and len(payload) > max_bytes:
        skip(TOO_LARGE, number, _head(rec, payload), len(payload) + rest)
        return None
    if rec_type == "conversion":
        mime = mime or "text/plain"
    elif not mime and _looks_like_html(payload):
        mime = "text/html"  # older crawls name no type: sniff the start of the payload
    if mime not in TEXT_TYPES:
        skip(NOT_TEXT, number, _head(rec, payload), len(payload))
        return None
    is_html = mime in HTML_TYPES and rec_type != "conversion"
    if is_html and len(_BINARY.findall(payload[:65536])) > _BINARY_SHARE * min(len(payload), 65536):
        skip(BAD_HTML, number, _head(rec, payload), len(payload))
        return None
    if is_html and charset is None:
        found = _META_CHARSET.search(payload[:4096])
        charset = found.group(1).decode("ascii").lower() if found else None
    text = _decode(payload, charset)
    if text is None:
        skip(CHARSET, number, _head(rec, payload), len(payload))
        return None
    if is_html:
        try:
            text = _extract(text)
        except Exception:  # the parser's failure on one page is that page's, not the run's
            skip(BAD_HTML, number, _head(rec, payload), len(payload))
            return None
    text = text.strip()
    if not text:
        skip(EMPTY, number, _head(rec, payload), len(payload))
        return None
    url = headers.get_header("WARC-Target-URI")
    return WebRecord(
        number=number,
        text=text,
        url=url.strip("<>") if url else None,
        date=headers.get_header("WARC-Date"),
        record_id=headers.get_header("WARC-Record-ID"),
    )


def iter_wet_records(
    lines: Iterable[bytes], path: Path, skip: Skip, max_bytes: int | None = None
) -> Iterator[WebRecord]:
    """The `conversion` records of a WET file given as binary lines (WARC/1.0 boundaries)."""
    number, headers, body, size, in_headers = 0, [], [], 0, False

    def finish() -> WebRecord | None:
        if not number:
            return None  # bytes before the first record: not a record
        return _wet_record(number, headers, body, size, skip, max_bytes)

    try:
        for line in lines:
            if line.rstrip(b"\r\n") == b"WARC/1.0":
                if (rec := finish()) is not None:
                    yield rec
                number, headers, body, size, in_headers = number + 1, [], [], 0, True
            elif in_headers:
                if line.strip():
                    headers.append(line)
                else:
                    in_headers = False
            else:
                size += len(line)
                if max_bytes is None or size <= max_bytes + 2:  # past the limit: count, not keep
                    body.append(line)
        if (rec := finish()) is not None:
            yield rec
    except (OSError, EOFError, ValueError, zlib.error) as e:  # truncated gzip/zstd
        skip(CORRUPT, number + 1, f"{path}: {type(e).__name__}: {e}"[:HEAD_CHARS], 0)


def _wet_record(
    number: int, lines: list[bytes], body: list[bytes], size: int, skip: Skip, max_bytes
) -> WebRecord | None:
    raw_headers = b"".join(lines).decode("utf-8", "replace")
    headers: dict[str, str] = {}
    for line in raw_headers.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            headers.setdefault(key.strip().lower(), value.strip())
    payload = b"".join(body)
    head = "WARC/1.0\n" + raw_headers + "\n" + payload[:HEAD_CHARS].decode("utf-8", "replace")
    head = head[:HEAD_CHARS]
    if headers.get("warc-type") != "conversion":
        skip(NOT_RESPONSE, number, head, size)
        return None
    mime, charset = _parse_content_type(headers.get("content-type"))
    if mime and mime != "text/plain":
        skip(NOT_TEXT, number, head, size)
        return None
    if max_bytes is not None and size > max_bytes + 2:  # + the blank line ending the record
        skip(TOO_LARGE, number, head, size)
        return None
    text = _decode(payload, charset or "utf-8")
    if text is None:
        skip(CHARSET, number, head, size)
        return None
    text = text.strip()
    if not text:
        skip(EMPTY, number, head, size)
        return None
    url = headers.get("warc-target-uri")
    return WebRecord(
        number=number,
        text=text,
        url=url.strip("<>") if url else None,
        date=headers.get("warc-date"),
        record_id=headers.get("warc-record-id"),
    )


def _cut(rec) -> bool:
    """Reads the rest of the record's block; True when the file ends before its Content-Length."""
    raw = rec.raw_stream
    while raw.read(1 << 20):
        pass
    return getattr(raw, "limit", 0) > 0


def _extract(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=True)


def _parse_content_type(value: str | None) -> tuple[str, str | None]:
    """`text/html; charset=ISO-8859-1` -> ("text/html", "iso-8859-1")."""
    if not value:
        return "", None
    mime, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset" and val.strip().strip("\"'"):
            charset = val.strip().strip("\"'").lower()
    return mime.strip().lower(), charset


def _decode(payload: bytes, charset: str | None) -> str | None:
    """The payload as text in the declared charset (strict), else UTF-8, else the detected one;
    None for an unknown charset name or bytes that are not text in it."""
    if charset is not None:
        try:
            codecs.lookup(charset)
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from resiliparse.parse.encoding import detect_encoding

    try:
        return payload.decode(detect_encoding(payload))
    except (LookupError, UnicodeDecodeError):
        return None


def _looks_like_html(payload: bytes) -> bool:
    start = payload[:1024].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<body" in start


def _length(rec) -> int:
    try:
        return int(rec.rec_headers.get_header("Content-Length") or 0)
    except ValueError:
        return 0


def _head(rec, payload: bytes) -> str:
    headers = rec.rec_headers.to_str() if hasattr(rec.rec_headers, "to_str") else ""
    if not headers:
        headers = "\n".join(f"{k}: {v}" for k, v in rec.rec_headers.headers)
    body = payload[:HEAD_CHARS].decode("utf-8", "backslashreplace")
    return (headers.strip() + "\n\n" + body)[:HEAD_CHARS]
