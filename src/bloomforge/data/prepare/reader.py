"""The reader step of `data prepare`: a source's files -> datatrove Documents with provenance.

In: the files of one source (txt / jsonl(.gz/.zst) / parquet), read by the house reader
`bloomforge.data.inputs.iter_documents`; datatrove's executor gives each task its share of the
files (`files[rank::world_size]`; `prepare` runs one task per file). Out: datatrove `Document`s,
id `SOURCE/FILE_INDEX/LINE` (stable whatever the number of workers), metadata `source`,
`language` (the source's code; for `auto` the record's or file name's language, else
"unknown"), `file`, `line` (1-based line or parquet row), `orig_id`, `url` when present.

Malformed records are counted in the ledger (step "read": in = kept + removed per reason, per
source) and written aside, with file, line, reason and the raw record, to
`MALFORMED_DIR/SOURCE/RANK.jsonl` (temp file renamed at the end of the task, so a rerun task
replaces it whole). The run never stops on them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from bloomforge.data import inputs
from bloomforge.data.ledger import IN, KEPT, ledger_key, record
from bloomforge.data.prepare.config import LANGUAGES

READ_STEP = "read"
UNKNOWN = "unknown"


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

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        final = Path(self.malformed_dir) / self.source / f"{rank:05d}.jsonl"
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        bad = 0
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as aside:
            for index in range(rank, len(self.files), world_size):
                path = self.files[index]
                self.stat_update("input_files")

                def on_skip(reason: str, line: int, raw: str, path: str = path) -> None:
                    nonlocal bad
                    bad += 1
                    entry = {"file": path, "line": line, "reason": reason, "record": raw}
                    aside.write(json.dumps(entry, ensure_ascii=False) + "\n")
                    self._count_malformed(reason, raw)

                for doc in self._read(index, path, on_skip):
                    self.update_doc_stats(doc)
                    yield doc
        if bad:
            os.replace(tmp, final)
        else:
            tmp.unlink()
            final.unlink(missing_ok=True)  # a rerun that found none replaces an old list

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
        ):
            meta = {
                "source": self.source,
                # a language named by the record or file name counts only as ISO 639-1 ("web.jsonl"
                # is not Web); otherwise language identification decides
                "language": d.language if d.language in LANGUAGES else UNKNOWN,
                "file": d.file,
                "line": d.line,
            }
            if d.id is not None:
                meta["orig_id"] = d.id
            if d.url is not None:
                meta["url"] = d.url
            doc = Document(text=d.text, id=f"{self.source}/{index}/{d.line}", metadata=meta)
            record(self, doc, IN)
            record(self, doc, KEPT)
            yield doc

    def _count_malformed(self, reason: str, raw: str) -> None:
        language = UNKNOWN if self.language == "auto" else self.language
        reason = reason.replace("|", "/")  # ledger keys are "|"-separated
        size = len(raw.encode("utf-8", "surrogatepass"))
        for outcome in (IN, reason):
            self.stat_update(ledger_key(READ_STEP, self.source, language, outcome, "docs"))
            key = ledger_key(READ_STEP, self.source, language, outcome, "bytes")
            self.stat_update(key, value=size, unit="bytes")
