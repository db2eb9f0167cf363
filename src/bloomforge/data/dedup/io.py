"""Reading and writing documents between dedup stages, and the small files they share.

In: a folder of jsonl(.gz/.zst) files written by datatrove's JsonlWriter (the filter stage's
output). Out: `PositionReader` yields their documents tagged with a corpus position that does not
depend on the number of tasks ((file number in sorted order) << 32 | line number), and
`OutputWriter` writes them back, one output file per input file, with the tags removed.

Both are datatrove disk readers/writers in the JsonlReader/JsonlWriter format (`text`, `id`,
`metadata`), but use the stdlib json module: datatrove's own Jsonl classes require orjson,
which bloomforge does not install.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseDiskReader
from datatrove.pipeline.writers.disk_base import DiskWriter

from bloomforge.errors import BloomforgeError

POS = "_dedup_pos"  # removed by OutputWriter; never reaches the output
FILE = "_dedup_file"
_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd")


def position(doc: Document) -> int:
    return int(doc.metadata[POS])


def input_files(folder: str) -> list[str]:
    """The jsonl files below `folder`, relative and sorted (the corpus order)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if n.endswith(_SUFFIXES))


class PositionReader(BaseDiskReader):
    """datatrove JsonlReader over whole files (file i to task i % tasks), tagging positions."""

    name = "dedup reader"

    def __init__(self, data_folder: str) -> None:
        super().__init__(data_folder, add_file_path=False)
        self.folder = str(data_folder)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        with self.data_folder.open(filepath, "rt", compression="infer") as f:
            for line_no, line in enumerate(f):
                try:
                    document = self.get_document_from_dict(json.loads(line), filepath, line_no)
                except json.JSONDecodeError as err:
                    msg = f"{self.folder}/{filepath} line {line_no + 1}: not valid JSON ({err})"
                    raise BloomforgeError(msg) from err
                if document is not None:
                    yield document

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        files = input_files(self.folder)
        for file_index in range(rank, len(files), world_size):
            self.stat_update("input_files")
            for line, doc in enumerate(self.read_file(files[file_index])):
                doc.metadata[POS] = (file_index << 32) | line
                doc.metadata[FILE] = files[file_index]
                self.update_doc_stats(doc)
                yield doc


def _output_name(input_name: str) -> str:
    """`a/b.jsonl.zst` -> `a/b.jsonl` (DiskWriter adds `.gz`)."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if input_name.endswith(suffix):
            return input_name[: -len(suffix)] + ".jsonl"
    return input_name + ".jsonl"


class OutputWriter(DiskWriter):
    """A jsonl.gz writer that writes each document to the output file named after its input."""

    name = "dedup writer"

    def __init__(self, output_folder: str) -> None:
        super().__init__(output_folder, output_filename="${_out}", compression="gzip", mode="wb")

    def _write(self, document: dict, file_handler, _filename: str) -> None:
        line = json.dumps(document, ensure_ascii=False) + "\n"
        file_handler.write(line.encode("utf-8", "surrogatepass"))

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        document.metadata.pop(POS, None)
        name = _output_name(str(document.metadata.pop(FILE)))
        super().write(document, rank, _out=name, **kwargs)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
