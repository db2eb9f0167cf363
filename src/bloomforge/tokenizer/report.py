"""The fertility report's one entry point: a tokenizer and text per language -> the report.

In: our tokenizer (a tokenizer.json or a folder holding one), evaluation text per language
(`fertility.load_eval_texts`), reference tokenizers by name, and optionally monolingual
baselines trained here per language (as BLOOM compared). Out: `FertilityReport`: the table
(fertility.json's content: per language and tokenizer, plus the tokenizer paths and notes) and
its markdown (fertility.md); `write` puts both in a folder. `bloomforge tokenizer fertility` and
`bloomforge run`'s tokenizer stage call `fertility_report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.tokenizer.fertility import (
    OURS,
    EvalText,
    fertility_table,
    format_fertility,
    monolingual_baselines,
)
from bloomforge.tokenizer.io import find_tokenizer_file, load_tokenizer


@dataclass
class Baselines:
    """Monolingual tokenizers trained per language as the reference (BLOOM's comparison)."""

    vocab_size: int = 8000
    train_texts: dict[str, list] = field(default_factory=dict)  # LANG -> InputSpecs
    max_bytes_per_language: int = 1_000_000_000
    seed: int = 0


@dataclass
class FertilityReport:
    table: dict[str, Any]
    markdown: str

    def write(self, folder: str | Path) -> None:
        """fertility.md and fertility.json into `folder` (each written atomically)."""
        files.write_text(Path(folder) / "fertility.md", self.markdown + "\n")
        files.write_json(Path(folder) / "fertility.json", self.table, indent=2)


def fertility_report(
    tokenizer: str | Path,
    texts: Mapping[str, EvalText],
    references: Mapping[str, str | Path] | None = None,
    baselines: Baselines | None = None,
) -> FertilityReport:
    """Fertility of `tokenizer` on `texts`, against `references` (NAME -> path) and, with
    `baselines`, a monolingual tokenizer per language."""
    ours = load_tokenizer(tokenizer)
    refs: dict[str, Any] = {}
    info: dict[str, Any] = {"tokenizer": str(find_tokenizer_file(tokenizer)), "references": {}}
    for name, path in (references or {}).items():
        if name in (OURS, "monolingual"):
            raise BloomforgeError(f"--reference '{name}={path}': name '{name}' is already used")
        refs[name] = load_tokenizer(path)
        info["references"][name] = {"path": str(find_tokenizer_file(path))}
    notes = []
    if baselines is not None:
        notes += _add_baselines(texts, baselines, refs, info)
    table = fertility_table(ours, refs, texts)
    table.update(info)
    table["notes"] = notes
    markdown = format_fertility(table, list(refs))
    if notes:
        markdown += "\n\n" + "\n".join(f"Note: {n}" for n in notes)
    return FertilityReport(table, markdown)


def _add_baselines(
    texts: Mapping[str, EvalText], cfg: Baselines, refs: dict[str, Any], info: dict[str, Any]
) -> Sequence[str]:
    notes = []
    unused = sorted(set(cfg.train_texts) - set(texts))
    if unused:
        notes.append(f"--train-text for {', '.join(unused)}: no --text in that language")
    tokenizers, base_info = monolingual_baselines(
        texts, cfg.train_texts, cfg.vocab_size, cfg.max_bytes_per_language, cfg.seed
    )
    refs["monolingual"] = tokenizers
    info["references"]["monolingual"] = base_info
    short = {k: v for k, v in base_info["vocab_size_reached"].items() if v < cfg.vocab_size}
    if short:
        notes.append(
            "monolingual baselines below --baseline-vocab-size (too little text): "
            + ", ".join(f"{k} {v}" for k, v in sorted(short.items()))
        )
    if base_info["trained_on_eval_text"]:
        notes.append(
            "monolingual baselines of "
            + ", ".join(base_info["trained_on_eval_text"])
            + " were trained on the evaluation text itself (no --train-text given); "
            "BLOOM trained them on separate monolingual corpora"
        )
    return notes
