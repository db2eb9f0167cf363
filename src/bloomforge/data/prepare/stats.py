"""OUT/stats.json of `data prepare`: what every step saw, kept and removed, per source x language.

In: the datatrove per-task stats under OUT/logs/STAGE/stats/ (the removal ledger of
`bloomforge.data.ledger`, PII counters of `bloomforge.data.pii`), the resolved config and the
list of stages. Out: `stats.json` (written atomically, last) with
- `ledger`: rows (stage, step, source, language, outcome, documents, bytes); outcome "in",
  "kept" or a removal reason; per step in = kept + removed (documents always; bytes too except
  for steps that rewrite text: pii, substring dedup);
- `reader`: per source records, documents, bytes and records set aside per reason (malformed,
  too_large), and per input file its records and documents (`files`; `empty_files`: those with
  no record at all, which would otherwise appear nowhere);
- `totals`: per source documents read, in the final corpus, removed per step and reason, and
  whether they add up; `final`: documents and bytes per source x language of OUT/documents;
- `pii`: spans per source x language x type; `dedup_summary` when dedup ran;
- `each_filter_alone`: per source x language, documents entering the filters and how many each
  filter would discard on its own (`bloomforge.data.filters.alone`, the ROOTS figure);
- `filters_off`: which filters did not run, and why; `steps`: step order per stage.
`language_table`, `step_table` and `alone_table` turn it into the ROOTS paper's table and
figure data.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.data.filters import read_alone
from bloomforge.data.ledger import (
    IN,
    KEPT,
    PREFIX,
    counters_by_source,
    ledger_from_stats,
    task_stats_files,
)
from bloomforge.data.pii import PII_STAT
from bloomforge.data.prepare.reader import FILE_STAT

READ, OUTPUT = "read", "output"
_NOT_REMOVALS = (IN, KEPT)


def _stage_files(out: Path, stage: str) -> list[Path]:
    return list(task_stats_files(out / "logs" / stage))


def _step_order(files: list[Path]) -> list[str]:
    """Ledger step names in pipeline order (from the key order of one task's stats)."""
    order: list[str] = []
    for path in files[:1]:
        for step in json.loads(path.read_text()):
            for key in step.get("stats", {}):
                parts = key.split("|")
                if len(parts) == 6 and parts[0] == PREFIX and parts[1] not in order:
                    order.append(parts[1])
    return order


def filters_off(config: Any) -> list[dict[str, str]]:
    """Steps that did not run, per source, with the reason (shown in the report)."""
    off: list[dict[str, str]] = []
    for src in config.sources:
        if src.language == "code":
            why = "a code source: ROOTS' quality filters and language id are for natural language"
            off.append({"source": src.name, "filter": "all filters", "why": why})
        elif not src.filters_on:
            off.append({"source": src.name, "filter": "all filters", "why": "filters: false"})
        else:
            off += [{"source": src.name, **item} for item in _filters_disabled(config, src)]
        if not src.dedup_on:
            off.append({"source": src.name, "filter": "dedup", "why": "dedup: false"})
        if not src.pii:
            off.append({"source": src.name, "filter": "pii", "why": "pii: false"})
    return off


def _filters_disabled(config: Any, src: Any) -> list[dict[str, str]]:
    from bloomforge.data.filters import disabled_filters
    from bloomforge.data.prepare.jobs import filter_config

    off = disabled_filters(filter_config(config, src))
    return [{"filter": str(name), "why": str(why)} for name, why in off.items()]


def build_stats(out: Path, config: dict, stages: list[dict], settings: dict) -> dict:
    from bloomforge.data.prepare.config import PrepareConfig
    from bloomforge.typed_config import from_dict

    out = Path(out)
    cfg = from_dict(PrepareConfig, config)
    ledger, steps, pii, alone, inputs = [], {}, {}, {}, {}
    for stage in stages:
        files = _stage_files(out, stage["name"])
        steps[stage["name"]] = _step_order(files)
        for r in ledger_from_stats(files):
            ledger.append({"stage": stage["name"], **r.__dict__})
        if stage["group"] == "filter":  # PII is redacted in the filter stage
            for source, langs in counters_by_source(files, PII_STAT).items():
                pii.setdefault(source, {}).update(langs)
            for source, langs in read_alone(files).items():
                alone.setdefault(source, {}).update(langs)
            inputs[stage["source"]] = _input_files(files, stage)
    names = [s.name for s in cfg.sources]
    reader = _reader(ledger, names)
    for name, per_file in inputs.items():
        reader[name]["files"] = per_file
        reader[name]["empty_files"] = [f for f, n in per_file.items() if n["records"] == 0]
    stats: dict[str, Any] = {
        "settings": settings,
        "sources": {
            s.name: {
                "language": s.language,
                "format": s.format,
                "filters": s.filters_on,
                "dedup": s.dedup_on,
                "pii": s.pii,
                "tasks": next((st["tasks"] for st in stages if st["source"] == s.name), 0),
            }
            for s in cfg.sources
        },
        "stages": stages,
        "steps": steps,
        "ledger": ledger,
        "reader": reader,
        "totals": _totals(ledger, names),
        "final": _final(ledger),
        "pii": pii,
        "each_filter_alone": alone,
        "filters_off": filters_off(cfg),
    }
    dedup_sources = [s.name for s in cfg.sources if s.dedup_on]
    if dedup_sources and cfg.dedup_scope == "corpus":
        dedup_sources = ["_corpus"]
    if dedup_sources:
        from bloomforge.data import dedup

        stats["dedup_summary"] = {
            name: dedup.dedup_summary(str(out / "work" / "dedup" / name)) for name in dedup_sources
        }
    return stats


def _input_files(stats_files: list[Path], stage: dict) -> dict[str, dict[str, int]]:
    """{input file: {records, documents}} of a filter stage (input files by index)."""
    counts = counters_by_source(stats_files, FILE_STAT).get(stage["source"], {})
    return {
        path: {
            "records": counts.get(str(i), {}).get("records", 0),
            "documents": counts.get(str(i), {}).get("documents", 0),
        }
        for i, path in enumerate(stage.get("files", []))
    }


def _reader(ledger: list[dict], sources: list[str]) -> dict[str, dict]:
    reader: dict[str, dict] = {
        s: {"records": 0, "documents": 0, "bytes": 0, "skipped": {}} for s in sources
    }
    for r in ledger:
        if r["step"] != READ:
            continue
        entry = reader.setdefault(
            r["source"], {"records": 0, "documents": 0, "bytes": 0, "skipped": {}}
        )
        if r["outcome"] == IN:
            entry["records"] += r["documents"]
        elif r["outcome"] == KEPT:
            entry["documents"] += r["documents"]
            entry["bytes"] += r["bytes"]
        else:
            skipped = entry["skipped"]
            skipped[r["outcome"]] = skipped.get(r["outcome"], 0) + r["documents"]
    return reader


def _totals(ledger: list[dict], sources: list[str]) -> dict[str, dict]:
    totals: dict[str, dict] = {s: {"read": 0, "final": 0, "removed": {}} for s in sources}
    for r in ledger:
        t = totals.setdefault(r["source"], {"read": 0, "final": 0, "removed": {}})
        if r["step"] == READ and r["outcome"] == KEPT:
            t["read"] += r["documents"]
        elif r["step"] == OUTPUT and r["outcome"] == KEPT:
            t["final"] += r["documents"]
        elif r["step"] != READ and r["outcome"] not in _NOT_REMOVALS:
            by_reason = t["removed"].setdefault(r["step"], {})
            by_reason[r["outcome"]] = by_reason.get(r["outcome"], 0) + r["documents"]
    for t in totals.values():
        removed = sum(n for reasons in t["removed"].values() for n in reasons.values())
        t["adds_up"] = t["read"] == t["final"] + removed
    return totals


def _final(ledger: list[dict]) -> dict[str, dict]:
    final: dict[str, dict] = {}
    for r in ledger:
        if r["step"] == OUTPUT and r["outcome"] == KEPT:
            cell = final.setdefault(r["source"], {}).setdefault(r["language"], [0, 0])
            cell[0] += r["documents"]
            cell[1] += r["bytes"]
    return {
        s: {lang: {"documents": d, "bytes": b} for lang, (d, b) in langs.items()}
        for s, langs in final.items()
    }


def write_stats(out: Path, config: dict, stages: list[dict], settings: dict) -> dict:
    """Build stats.json and write it atomically (temp file + rename); returns its content."""
    stats = build_stats(out, config, stages, settings)
    files.write_json(Path(out) / "stats.json", stats, newline=False)
    return stats


def language_table(stats: dict) -> list[dict[str, Any]]:
    """ROOTS' table: per language, documents and bytes kept / removed after reading.

    Removed = every removal after the reader (malformed records are not documents); the bytes
    of text rewritten in place (PII, substrings) are not counted as removed.
    """
    cells: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in stats["ledger"]:
        c = cells[r["language"]]
        if r["step"] == OUTPUT and r["outcome"] == KEPT:
            c["kept_docs"] += r["documents"]
            c["kept_bytes"] += r["bytes"]
        elif r["step"] != READ and r["outcome"] not in _NOT_REMOVALS:
            c["removed_docs"] += r["documents"]
            c["removed_bytes"] += r["bytes"]
    rows = []
    for lang, c in sorted(cells.items()):
        docs, size = c["kept_docs"] + c["removed_docs"], c["kept_bytes"] + c["removed_bytes"]
        if docs == 0:
            continue
        rows.append(
            {
                "language": lang,
                "documents": docs,
                "bytes": size,
                "kept_documents": c["kept_docs"],
                "kept_bytes": c["kept_bytes"],
                "removed_documents_pct": 100.0 * c["removed_docs"] / docs,
                "removed_bytes_pct": 100.0 * c["removed_bytes"] / size if size else 0.0,
            }
        )
    return rows


def step_table(stats: dict, group: str | None = None) -> dict[str, dict[str, float]]:
    """Per step (pipeline order), per language: % of the documents reaching it that it removed.

    `group` keeps only the steps of stages of that group ("filter", "dedup").
    """
    groups = {s["name"]: s["group"] for s in stats["stages"]}
    order = [
        st
        for stage, names in stats["steps"].items()
        for st in names
        if group is None or groups.get(stage) == group
    ]
    seen = dict.fromkeys(s for s in order if s not in (READ, OUTPUT))
    reach: dict = defaultdict(lambda: defaultdict(int))
    removed: dict = defaultdict(lambda: defaultdict(int))
    for r in stats["ledger"]:
        if r["step"] not in seen or r["outcome"] == IN:
            continue
        reach[r["step"]][r["language"]] += r["documents"]  # kept + removed: language-consistent
        if r["outcome"] != KEPT:
            removed[r["step"]][r["language"]] += r["documents"]
    return {
        step: {
            lang: 100.0 * removed[step][lang] / n for lang, n in sorted(reach[step].items()) if n
        }
        for step in seen
    }


def alone_table(stats: dict) -> dict[str, dict[str, float]]:
    """{filter: {language: % of the language's documents it would discard on its own}}, summed
    over sources (the ROOTS paper's per-filter figure)."""
    seen: dict[str, int] = defaultdict(int)
    removed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for langs in stats.get("each_filter_alone", {}).values():
        for lang, counts in langs.items():
            seen[lang] += counts.get("_documents", 0)
            for name, n in counts.items():
                if name != "_documents":
                    removed[name][lang] += n
    return {
        name: {lang: 100.0 * per_lang.get(lang, 0) / seen[lang] for lang in seen if seen[lang]}
        for name, per_lang in removed.items()
    }
