"""Build xP3-style prompted data: templates x local datasets -> `{inputs, targets}` jsonl.

In: template roots (promptsource `templates.yaml` files), `name=path` datasets
(bloomforge.mtf.datasets), a cap per dataset and language, a seed. Out, in one folder written
atomically: `<lang>.jsonl`, one record per line (xP3's `inputs`/`targets` plus provenance:
`dataset`, `template_id`, `template_name`, `language`, `record_id`), and `manifest.json` with
counts per dataset x language x template (written, skipped with reasons) and the malformed
records set aside.

Sampling follows xP3 (bigscience-workshop/xmtf, prepare_xp3.py): every template of a dataset is
applied to its own seeded sample of the examples, `cap // n_templates` of them, so one language
of one dataset gives at most `cap` records however many templates it has.
"""

from __future__ import annotations

import json
import logging
import random
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.mtf.datasets import READERS, Example, read_dataset
from bloomforge.mtf.templates import RenderSkip, Template, templates_for

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_EXAMPLE_IDS = 3  # record ids kept per skip reason, to find the records again


@dataclass
class Task:
    name: str
    path: str


def parse_task(spec: str) -> Task:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise BloomforgeError(f"--task {spec}: expected NAME=PATH (e.g. xquad=data/xquad)")
    return Task(name, path)


def _sample(n: int, k: int | None, seed: str) -> list[int]:
    if k is None or k >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), k))


def build(
    tasks: Sequence[Task],
    template_roots: Sequence[str | Path],
    out: str | Path,
    *,
    max_per_dataset: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Render every task's examples with its templates and write `out` atomically; returns the
    manifest. A bad template or unreadable dataset is a one-line BloomforgeError before any
    output is written; a record a template cannot render is counted and skipped."""
    if max_per_dataset is not None and max_per_dataset < 1:
        raise BloomforgeError("--max-per-dataset must be >= 1")
    if len({t.name for t in tasks}) != len(tasks):
        raise BloomforgeError("--task: each dataset name may be given once")
    plans: list[tuple[Task, list[Template], dict[str, list[Example]], dict]] = []
    for task in tasks:
        if task.name not in READERS:
            raise BloomforgeError(
                f"--task {task.name}=...: unknown dataset; known: {', '.join(sorted(READERS))}"
            )
        templates = templates_for(task.name, list(template_roots))
        if not templates:
            raise BloomforgeError(
                f"--task {task.name}: no templates with 'dataset: {task.name}' under "
                f"{', '.join(map(str, template_roots))}"
            )
        by_lang: dict[str, list[Example]] = defaultdict(list)
        bad: dict[str, dict[str, dict]] = defaultdict(dict)
        for ex in read_dataset(task.name, task.path):
            if ex.reason is None:
                by_lang[ex.lang].append(ex)
            else:
                _count(bad[ex.lang], ex.reason, ex.key)
        plans.append((task, templates, dict(by_lang), dict(bad)))

    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    counts: dict[str, Any] = {}
    set_aside: dict[str, Any] = {}
    for task, templates, by_lang, bad in plans:
        counts[task.name], set_aside[task.name] = {}, bad
        per_template = (
            None if max_per_dataset is None else max(1, max_per_dataset // len(templates))
        )
        for lang in sorted(by_lang):
            examples = by_lang[lang]
            per_lang = counts[task.name][lang] = {}
            for t in templates:
                chosen = _sample(len(examples), per_template, f"{seed}:{task.name}:{lang}:{t.id}")
                entry = {"name": t.name, "sampled": len(chosen), "written": 0, "skipped": {}}
                for i in chosen:
                    ex = examples[i]
                    try:
                        inputs, targets = t.input_target(ex.fields, seed=_record_seed(seed, ex))
                    except RenderSkip as e:
                        _count(entry["skipped"], str(e), ex.key)
                        continue
                    records[lang].append(
                        {
                            "inputs": inputs,
                            "targets": targets,
                            "dataset": task.name,
                            "template_id": t.id,
                            "template_name": t.name,
                            "language": lang,
                            "record_id": ex.key,
                        }
                    )
                    entry["written"] += 1
                per_lang[t.id] = entry
        log.info(
            "mtf build: %s: %d language(s), %d template(s), %d records",
            task.name,
            len(by_lang),
            len(templates),
            sum(e["written"] for lang in counts[task.name].values() for e in lang.values()),
        )

    manifest = {
        "format": "xP3: one JSON object per line, inputs + targets (+ provenance)",
        "seed": seed,
        "max_per_dataset": max_per_dataset,
        "templates": [str(r) for r in template_roots],
        "tasks": {t.name: t.path for t in tasks},
        "files": {
            lang: {"file": f"{lang}.jsonl", "records": len(records[lang])}
            for lang in sorted(records)
        },
        "counts": counts,
        "malformed_records": set_aside,
        "totals": _totals(counts, set_aside),
    }
    with atomic_directory(out) as tmp:
        for lang in sorted(records):
            with files.atomic_file(tmp / f"{lang}.jsonl") as f:
                for rec in records[lang]:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        files.write_json(tmp / MANIFEST, manifest, indent=2)
    return manifest


def _record_seed(seed: int, ex: Example) -> int:
    # The `choice` filter's draws depend on the record, not on where it sits in the sample
    # (crc32, not hash(): Python salts str hashes per process).
    return seed * 1_000_003 + zlib.crc32(f"{ex.lang}:{ex.key}".encode())


def _count(reasons: dict[str, dict], reason: str, key: str) -> None:
    slot = reasons.setdefault(reason, {"count": 0, "records": []})
    slot["count"] += 1
    if len(slot["records"]) < _EXAMPLE_IDS:
        slot["records"].append(key)


def _totals(counts: dict, set_aside: dict) -> dict[str, int]:
    entries = [e for ds in counts.values() for lang in ds.values() for e in lang.values()]
    return {
        "written": sum(e["written"] for e in entries),
        "skipped": sum(s["count"] for e in entries for s in e["skipped"].values()),
        "malformed_records": sum(
            s["count"] for ds in set_aside.values() for lang in ds.values() for s in lang.values()
        ),
    }
