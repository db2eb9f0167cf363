"""The reader step of `data prepare`: a source's files -> datatrove Documents with provenance.

In: the files of one source (txt / jsonl / warc / wet (.gz/.zst) / parquet), read by the house
reader `documents.inputs.iter_documents`; datatrove's executor gives each task its share of
the files (`files[rank::world_size]`; `prepare` runs one task per file). Out: datatrove `Document`s,
id `SOURCE/FILE_INDEX/LINE` (stable whatever the number of workers), metadata `source`,
`language` (the source's code; for `auto` the record's or file name's language, else
"unknown"), `file`, `line` (1-based line, parquet row or WARC record), `orig_id`, `url` when
present, and `date` (WARC-Date, the crawl date) for web archives: the exact-URL dedup step reads
`url`. Web-archive records that give no text (non-response records, non-text MIME types, charset
errors, bad HTML, empty extractions: `bloomforge.documents.warc`) are malformed records like these.
A lone surrogate in a metadata value (a JSON "\\ud800" escape in an id or URL) is kept spelled
`\\ud800`: datatrove's JsonlWriter writes only what UTF-8 can encode.

Malformed records, and records over `max_doc_bytes` (`too_large`, before any costly step: one
50 MB record otherwise takes minutes and gigabytes in language id and the filters), are counted
in the ledger (step "read": in = kept + removed per reason, per source) and written aside, with
file, line, reason, size in bytes and the raw record (the first 1,000 characters of a too large
one), to `MALFORMED_DIR/SOURCE/RANK.jsonl` (temp file renamed at the end of the task, so a rerun
task replaces it whole). The run never stops on them. Each input file's records and documents
are counted too (`file_key`), so a file that gave none, an empty one, is named in stats.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader

from bloomforge import files
from bloomforge.data.ledger import IN, KEPT, ledger_key, record
from bloomforge.data.prepare.config import LANGUAGES
from bloomforge.documents import inputs

READ_STEP = "read"
UNKNOWN = "unknown"
FILE_STAT = "file"


def file_key(source: str, index: int, what: str) -> str:
    """The stats key of the input file `index` of `source`: what = records | documents."""
    return f"{FILE_STAT}|{source}|{index}|{what}"


def _utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


class SourceReader(PipelineStep):
    """Reads the files of one source (a datatrove reader step; `files` sharded over tasks)."""

    name = "bloomforge source reader"
    type = "📖 - READER"
    ledger_name = READ_STEP

    def __init__(
        self,
        source: str,
        files: list[str],
        malformed_dir: str,
        language: str = "auto",
        fmt: str | None = None,
        text_key: str = "text",
        id_key: str = "id",
        url_key: str = "url",
        max_doc_bytes: int = 0,
    ) -> None:
        super().__init__()
        self.source = source
        self.files = list(files)
        self.malformed_dir = malformed_dir
        self.language = language
        self.fmt = fmt
        self.text_key = text_key
        self.id_key = id_key
        self.url_key = url_key
        self.max_doc_bytes = max_doc_bytes  # 0: no limit

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        # whole or absent: no file when nothing was set aside (a rerun replaces an old list)
        with files.side_file(Path(self.malformed_dir) / self.source, rank) as aside:
            for index in range(rank, len(self.files), world_size):
                path = self.files[index]
                self.stat_update("input_files")
                skipped, documents = 0, 0

                def on_skip(reason: str, line: int, raw: str, size: int, path: str = path) -> None:
                    nonlocal skipped
                    skipped += 1
                    entry = {"file": path, "line": line, "reason": reason, "bytes": size}
                    entry["record"] = raw
                    aside.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    self._count_malformed(reason, size)

                for doc in self._read(index, path, on_skip):
                    documents += 1
                    self.update_doc_stats(doc)
                    yield doc
                # value 0 still makes the key: an empty file is counted, not missing
                self.stat_update(file_key(self.source, index, "records"), value=documents + skipped)
                self.stat_update(file_key(self.source, index, "documents"), value=documents)

    def _read(self, index: int, path: str, on_skip: inputs.SkipHandler):
        language = None if self.language == "auto" else self.language
        spec = inputs.InputSpec(Path(path), language)
        for d in inputs.iter_documents(
            spec,
            text_key=self.text_key,
            id_key=self.id_key,
            url_key=self.url_key,
            fmt=self.fmt,
            on_skip=on_skip,
            max_bytes=self.max_doc_bytes or None,
        ):
            meta = {
                "source": self.source,
                # a language named by the record or file name counts only as ISO 639-1 ("web.jsonl"
                # is not Web); otherwise language identification decides
                "language": d.language if d.language in LANGUAGES else UNKNOWN,
                "file": _utf8(d.file),
                "line": d.line,
            }
            for key, value in (("orig_id", d.id), ("url", d.url), ("date", d.date)):
                if value is not None:
                    meta[key] = _utf8(value)
            doc = Document(text=d.text, id=f"{self.source}/{index}/{d.line}", metadata=meta)
            record(self, doc, IN)
            record(self, doc, KEPT)
            yield doc

    def _count_malformed(self, reason: str, size: int) -> None:
        language = UNKNOWN if self.language == "auto" else self.language
        reason = reason.replace("|", "/")  # ledger keys are "|"-separated
        for outcome in (IN, reason):
            self.stat_update(ledger_key(READ_STEP, self.source, language, outcome, "docs"))
            key = ledger_key(READ_STEP, self.source, language, outcome, "bytes")
            self.stat_update(key, value=size, unit="bytes")


class FolderReader(JsonlReader):
    """datatrove's JsonlReader over a folder's `*.jsonl.gz` (the final stage's input). A folder
    without files (every document of a source may have been removed upstream) yields nothing,
    where datatrove's readers raise."""

    def __init__(self, data_folder: str, glob_pattern: str = "*.jsonl.gz") -> None:
        super().__init__(data_folder, glob_pattern=glob_pattern, add_file_path=False)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        try:
            files = self.data_folder.list_files(recursive=True, glob_pattern=self.glob_pattern)
        except FileNotFoundError:
            files = []
        if files:
            yield from super().run(data, rank, world_size)
        elif data:
            yield from data
