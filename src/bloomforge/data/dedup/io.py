"""What the dedup steps read and write: documents, and the work folder between stages.

Documents. In: a folder of jsonl(.gz/.zst) files in datatrove's JsonlWriter format (the filter
stage's output). `PositionReader` (datatrove's JsonlReader) yields their documents tagged with a
corpus position that does not depend on the number of tasks ((file number in sorted order) << 32
| line number) and their file; `OutputWriter` (datatrove's JsonlWriter) writes them back, one
output file per input file, with the tags removed.

Work folder. `DedupStep` is the base of every bloomforge dedup step: its config, the work folder
where each stage leaves what later ones read (`resolved.npz`, `templates.npz`, `SPANS`), read
once per process, and the lookup of a document's position in them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from .config import DedupConfig

POS = "_dedup_pos"  # removed by OutputWriter; never reaches the output
FILE = "_dedup_file"
_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.zstd")
RESOLVED, TEMPLATES, SPANS = "resolved.npz", "templates.npz", "substrings/spans.npz"


def position(doc: Document) -> int:
    return int(doc.metadata[POS])


def language(doc: Document) -> str:
    return str(doc.metadata.get("language", "unknown"))


def input_files(folder: str) -> list[str]:
    """The jsonl files below `folder`, relative and sorted (the corpus order)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    names = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return sorted(n for n in names if n.endswith(_SUFFIXES))


class PositionReader(JsonlReader):
    """datatrove's JsonlReader over whole files (file i to task i % tasks), tagging positions."""

    name = "dedup reader"

    def __init__(self, data_folder: str) -> None:
        super().__init__(data_folder, add_file_path=False)
        self.folder = str(data_folder)

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
    """`a/b.jsonl.zst` -> `a/b.jsonl` (the writer adds `.gz`)."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if input_name.endswith(suffix):
            return input_name[: -len(suffix)] + ".jsonl"
    return input_name + ".jsonl"


class OutputWriter(JsonlWriter):
    """datatrove's JsonlWriter (gzip), each document to the output file named after its input."""

    name = "dedup writer"

    def __init__(self, output_folder: str) -> None:
        super().__init__(output_folder, output_filename="${_out}")

    def write(self, document: Document, rank: int = 0, **kwargs) -> None:
        document.metadata.pop(POS, None)
        name = _output_name(str(document.metadata.pop(FILE)))
        super().write(document, rank, _out=name, **kwargs)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def find_position(positions: np.ndarray, doc: Document) -> int | None:
    """The index of `doc`'s position in the sorted `positions`, None if it is not there."""
    pos = np.uint64(position(doc))
    i = int(np.searchsorted(positions, pos))
    return i if i < positions.size and positions[i] == pos else None


class DedupStep(PipelineStep):
    """A dedup step: its config and the work folder it reads (once per process) and writes."""

    type = "🫂 - DEDUP"

    def __init__(self, work_dir: str, config: DedupConfig) -> None:
        super().__init__()
        self.work_dir = str(work_dir)
        self.config = config
        self._read: dict[str, dict[str, np.ndarray]] = {}

    def work_file(self, name: str) -> Path:
        return Path(self.work_dir) / name

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays an earlier stage left in the work file `name`, read on first use."""
        if name not in self._read:
            self._read[name] = load_arrays(self.work_file(name))
        return self._read[name]

    def reason_code(self, doc: Document) -> int:
        """What `ResolveDuplicates` decided for `doc`: 0 (keep) or the code of its reason."""
        resolved = self.arrays(RESOLVED)
        i = find_position(resolved["pos"], doc)
        if i is None:
            raise ValueError(f"document {doc.id} was not seen by the dedup signature stage")
        return int(resolved["reason"][i])

    def single_task(self, world_size: int) -> None:
        if world_size != 1:
            raise ValueError(f"{type(self).__name__} runs as a single task")
