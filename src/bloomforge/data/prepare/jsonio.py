"""datatrove-format jsonl (`{"text", "id", "metadata"}` per line) without orjson.

In: datatrove Documents (`JsonWriter`, a datatrove DiskWriter) or a folder of such files
(`FolderReader`, a datatrove BaseDiskReader). Out: the same files datatrove's JsonlWriter writes
and JsonlReader reads (those two need the `orjson` package, which bloomforge does not require),
with the standard library's json. `FolderReader` yields nothing for a folder without files
(every document of a source may have been removed upstream) where datatrove's readers raise.
"""

from __future__ import annotations

import json
from typing import IO

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.writers.disk_base import DiskWriter


class JsonWriter(DiskWriter):
    """datatrove's JsonlWriter format (gzip by default), written with the json module."""

    default_output_filename = "${rank}.jsonl"
    name = "🐿 Jsonl (json)"

    def __init__(self, output_folder: str, output_filename: str | None = None) -> None:
        super().__init__(output_folder, output_filename=output_filename, compression="gzip")

    def _write(self, document: dict, file_handler: IO, _filename: str) -> None:
        document.pop("media", None)  # text only
        try:
            file_handler.write(json.dumps(document, ensure_ascii=False) + "\n")
        except UnicodeEncodeError:  # a lone surrogate in metadata: \u-escape it (valid JSON)
            file_handler.write(json.dumps(document) + "\n")


class FolderReader(BaseDiskReader):
    """Reads the JsonWriter files of a folder, sharded over tasks like datatrove's readers."""

    name = "🐿 Jsonl (json)"

    def __init__(self, data_folder: str, glob_pattern: str = "*.jsonl.gz") -> None:
        super().__init__(data_folder, glob_pattern=glob_pattern, add_file_path=False)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rt", compression="infer", encoding="utf-8") as f:
            for li, line in enumerate(f):
                with self.track_time():
                    document = self.get_document_from_dict(json.loads(line), filepath, li)
                if document:
                    yield document

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        try:
            files = self.data_folder.list_files(recursive=True, glob_pattern=self.glob_pattern)
        except FileNotFoundError:
            files = []
        if files:
            yield from super().run(data, rank, world_size)
        elif data:
            yield from data
