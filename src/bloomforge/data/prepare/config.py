"""The configuration of `data prepare`: sources, filters, dedup, PII and executor settings.

In: a `data.yaml` (`load_prepare_config`) or the `--input NAME=PATH` flags (`config_from_inputs`).
Out: a validated `PrepareConfig` (typed via `bloomforge.typed_config`: an unknown key is an error
naming it and the nearest valid one), and per source the resolved filter / dedup sections.

`filters:` and `dedup:` are the sections of `bloomforge.data.filters.FilterConfig` and
`bloomforge.data.dedup.DedupConfig`; they are kept as mappings here and typed in `prepare()`, so
this module imports neither. A source's `filters` / `dedup` is `true` (the top-level section),
`false` (step off for this source) or a mapping deep-merged over the top-level section.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bloomforge.documents.inputs import (
    CODE,
    LANGUAGES,
    InputSpec,
    is_input_file,
    language_of_name,
    parse_inputs,
    split_input,
)
from bloomforge.errors import BloomforgeError
from bloomforge.typed_config import from_dict, load_yaml, save_yaml, to_dict

# The language codes a source may have (ISO 639-1, and CODE: programming code, which gets no
# language identification and no natural-language quality filters; dedup and PII still apply)
# are those of `--input NAME=PATH` everywhere: `documents.inputs`.
AUTO = "auto"
# Source names become folder names and ledger keys (no "|"); "stats" would collide with
# datatrove's per-task `stats/` folders that `read_ledger` collects.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FORMATS = {
    "auto": None,
    "jsonl": "jsonl",
    "parquet": "parquet",
    "txt": "text",
    "warc": "warc",
    "wet": "wet",
}
# Records larger than this are set aside at read time (`too_large`), before language id, PII and
# the filters: one 50 MB record took 2 min 52 s and 2.8 GB of memory before a filter dropped it.
# Books and long web pages stay well under it.
MAX_DOC_BYTES = 5_000_000


@dataclass
class SourceConfig:
    """One input source, kept separate until the final mix (as ROOTS did)."""

    name: str
    paths: list[str]  # files, globs or folders (relative paths: to the config file's folder)
    # auto: from the file suffix (.warc / .wet (.gz) are web archives)
    format: Literal["auto", "jsonl", "parquet", "txt", "warc", "wet"] = "auto"
    text_key: str = "text"
    id_key: str = "id"
    url_key: str = "url"
    # ISO 639-1 code, or "auto": each record's own language (metadata.language, a file named
    # fr.txt), and language identification for records that name none
    language: str = AUTO
    filters: bool | dict[str, Any] = True
    dedup: bool | dict[str, Any] = True
    pii: bool = True

    def __post_init__(self) -> None:
        if not _NAME.match(self.name) or self.name == "stats":
            raise ValueError(
                f"key 'name': {self.name!r} is not a usable source name "
                "(letters, digits, '_', '-', '.'; not 'stats')"
            )
        if self.language != AUTO and self.language not in LANGUAGES:
            raise ValueError(
                f"key 'language': {self.language!r} is not an ISO 639-1 code, 'code' or 'auto'"
            )
        if not self.paths:
            raise ValueError("key 'paths': give at least one file, glob or folder")

    @property
    def reader_format(self) -> str | None:
        """The `bloomforge.documents.inputs` format name, None to guess from each file's suffix."""
        return _FORMATS[self.format]

    @property
    def filters_on(self) -> bool:
        return self.filters is not False and self.language != CODE

    @property
    def dedup_on(self) -> bool:
        return self.dedup is not False


@dataclass
class SlurmConfig:
    """Options of datatrove's SlurmPipelineExecutor (one job array per stage, chained)."""

    partition: str = ""
    time: str = "24:00:00"  # per task
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    job_name: str = "bloomforge-data"
    venv_path: str | None = None  # activated in each job
    env_command: str | None = None  # or any shell command that sets the environment up
    condaenv: str | None = None
    sbatch_args: dict[str, Any] = field(default_factory=dict)
    max_array_size: int = 1001
    workers: int = -1  # tasks running at once per stage; -1: no limit


@dataclass
class RayConfig:
    """Options of datatrove's RayPipelineExecutor (needs the `ray` package and a cluster)."""

    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0


@dataclass
class PIISettings:
    """BigScience's PII redaction (see `bloomforge.data.pii`)."""

    types: list[Literal["KEY", "EMAIL", "USER", "IP"]] = field(
        default_factory=lambda: ["KEY", "EMAIL", "USER", "IP"]
    )
    public_ips_only: bool = False  # BigScience redacted private addresses too


@dataclass
class PrepareConfig:
    # empty in a `bloomforge run` recipe with a `corpus` section: the gathered corpus is used
    sources: list[SourceConfig] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)  # FilterConfig section
    dedup: dict[str, Any] = field(default_factory=dict)  # DedupConfig section
    # "source": each source deduplicated on its own (ROOTS kept sources apart); "corpus": all
    # sources together, the first copy kept in source order (copies shipped by two sources go).
    dedup_scope: Literal["source", "corpus"] = "source"
    pii: PIISettings = field(default_factory=PIISettings)
    # a record (line of a txt/jsonl file, text of a parquet row) over this many bytes is set
    # aside as too_large when read; 0: no limit
    max_doc_bytes: int = MAX_DOC_BYTES
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        if self.max_doc_bytes < 0:
            raise ValueError(
                f"key 'max_doc_bytes': {self.max_doc_bytes} is negative (0 means no limit)"
            )
        if self.dedup_scope == "corpus":
            for src in self.sources:
                if src.dedup is not True:
                    raise ValueError(
                        f"key 'dedup_scope': 'corpus' deduplicates all sources together with the "
                        f"top-level dedup section; source {src.name!r} sets its own 'dedup'"
                    )
        names = [s.name for s in self.sources]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"key 'sources': source name {name!r} is used twice")

    def source_filters(self, source: SourceConfig) -> dict[str, Any]:
        return _section(self.filters, source.filters)

    def source_dedup(self, source: SourceConfig) -> dict[str, Any]:
        return _section(self.dedup, source.dedup)


def _section(top: Mapping[str, Any], own: bool | Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(top))
    if isinstance(own, Mapping):
        _deep_merge(merged, own)
    return merged


def _deep_merge(into: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def load_prepare_config(path: str | os.PathLike) -> PrepareConfig:
    """`data.yaml` -> PrepareConfig; relative source paths are taken from the file's folder."""
    data = load_yaml(path)
    config = from_dict(PrepareConfig, data)
    if not config.sources:
        raise BloomforgeError(f"{path}: key 'sources': give at least one source")
    base = Path(path).resolve().parent
    for source in config.sources:
        source.paths = [p if os.path.isabs(p) else str(base / p) for p in source.paths]
    return config


def config_from_inputs(
    inputs: Sequence[str],
    filters: bool = True,
    dedup: bool = True,
    pii: bool = True,
    max_doc_bytes: int = MAX_DOC_BYTES,
) -> PrepareConfig:
    """`["fr=crawl_fr/*.jsonl.gz", "code=src/*.jsonl"]` -> one source per NAME=PATH.

    `--input` as every command reads it (`documents.inputs.split_input`): the name is the source
    name; its language is the name when that is a language code (ISO 639-1 or `code`), else
    "auto". Without NAME= the name is the first file's name up to its first dot. Repeating a
    name adds paths to that source.
    """
    by_name: dict[str, list[str]] = {}
    for spec in inputs:
        name, pattern = split_input(spec)
        first = _expand(pattern)[0].path  # a missing file is an error now, not inside a worker
        name = name or first.name.split(".")[0]
        by_name.setdefault(name, []).append(pattern)
    sources = [
        {
            "name": name,
            "paths": paths,
            "language": language_of_name(name) or AUTO,
            "filters": filters,
            "dedup": dedup,
            "pii": pii,
        }
        for name, paths in by_name.items()
    ]
    return from_dict(PrepareConfig, {"sources": sources, "max_doc_bytes": max_doc_bytes})


def _expand(pattern: str) -> list[InputSpec]:
    return parse_inputs([pattern])


def source_files(source: SourceConfig) -> list[Path]:
    """The files of a source, sorted per path entry, each once; a missing one is an error."""
    seen: dict[Path, None] = {}
    for pattern in source.paths:
        try:
            specs = parse_inputs([pattern])
        except BloomforgeError as e:
            raise BloomforgeError(f"source '{source.name}': {e}") from None
        for spec in specs:
            seen.setdefault(spec.path, None)
    files = list(seen)
    if source.reader_format is None:
        for path in files:
            if not is_input_file(path):
                raise BloomforgeError(
                    f"source '{source.name}': {path}: cannot tell the format from the name "
                    "(set format: jsonl, parquet, txt, warc or wet)"
                )
    return files


def check_saved_config(config: PrepareConfig, out: Path) -> None:
    """Write OUT/config.yaml, or check that a rerun on OUT uses the same configuration."""
    if not config.sources:
        raise BloomforgeError("key 'sources': give at least one source")
    path = Path(out) / "config.yaml"
    if path.exists():
        if load_yaml(path) != to_dict(config):
            raise BloomforgeError(
                f"{path}: {out} was prepared with a different configuration; "
                "use another --out, or delete the folder to start over"
            )
        return
    save_yaml(config, path)
