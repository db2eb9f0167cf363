"""Local datasets read as promptsource-style examples, one language at a time.

In: a dataset name and a path (a folder or a file). Out: `Example`s carrying the fields the
templates for that dataset expect (the features of the Hugging Face dataset of that name):
- xquad: `xquad.<lang>.json` in SQuAD v1.1 layout -> one example per question with `id`,
  `title`, `context`, `question`, `answers` {`text`: [...], `answer_start`: [...]} (HF squad/xquad);
- tatoeba: line-aligned `tatoeba.<xxx>-eng.<xxx>` / `.eng` -> `sentence`, `english`, `lang`,
  `lang_name` (bloomforge's built-in translation templates use these);
- hellaswag: `*.jsonl[.gz]` (shared/data/eval/hellaswag) -> `ctx`, `activity_label`, `endings`,
  `label` as text like HF's (`ctx_a`/`ctx_b` are absent there: templates using them are skipped).
A record that cannot be an example (bad JSON line, a question that is not a mapping) comes back
with `reason` set, to be counted and set aside; an unreadable file is a one-line error.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycountry

from bloomforge.errors import BloomforgeError


@dataclass
class Example:
    lang: str
    key: str  # record id for provenance and error messages
    fields: dict[str, Any]
    reason: str | None = None  # set: a malformed record, set aside


def language(code: str) -> tuple[str, str]:
    """(short code, English name): ISO 639-1 where one exists (xP3's folder names), else the
    given code; `fra` -> ('fr', 'French'), `cmn` -> ('cmn', 'Mandarin Chinese')."""
    key = "alpha_2" if len(code) == 2 else "alpha_3"
    entry = pycountry.languages.get(**{key: code})
    if entry is None:
        return code, code
    return getattr(entry, "alpha_2", code), entry.name


def _files(path: Path, pattern: str) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.glob(pattern))
        if not found:
            raise BloomforgeError(f"{path}: no {pattern} files")
        return found
    raise BloomforgeError(f"{path}: no such file or folder")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot read ({e.strerror})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BloomforgeError(f"{path}: not valid JSON ({e})") from e


def read_xquad(path: Path) -> Iterator[Example]:
    for f in _files(path, "xquad.*.json"):
        lang = language(f.name.split(".")[1])[0] if f.name.count(".") >= 2 else f.stem
        doc = _read_json(f)
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise BloomforgeError(f"{f}: not SQuAD layout (no 'data' list)")
        for a, article in enumerate(doc["data"]):
            paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
            if not isinstance(paragraphs, list):
                yield Example(lang, f"{f.name}:data[{a}]", {}, "article without 'paragraphs'")
                continue
            for p, para in enumerate(paragraphs):
                qas = para.get("qas") if isinstance(para, dict) else None
                if not isinstance(qas, list):
                    yield Example(lang, f"{f.name}:data[{a}][{p}]", {}, "paragraph without 'qas'")
                    continue
                for q, qa in enumerate(qas):
                    key = f"{f.name}:data[{a}][{p}][{q}]"
                    if not isinstance(qa, dict):
                        yield Example(lang, key, {}, "question is not a mapping")
                        continue
                    fields: dict[str, Any] = {"title": article.get("title", "")}
                    if "context" in para:
                        fields["context"] = para["context"]
                    for name in ("id", "question"):
                        if name in qa:
                            fields[name] = qa[name]
                    answers = [x for x in qa.get("answers", []) if isinstance(x, dict)]
                    fields["answers"] = {
                        "text": [x.get("text", "") for x in answers],
                        "answer_start": [x.get("answer_start", -1) for x in answers],
                    }
                    yield Example(lang, str(qa.get("id", key)), fields)


def read_tatoeba(path: Path) -> Iterator[Example]:
    for f in _files(path, "tatoeba.*-eng.*"):
        stem, _, ext = f.name.rpartition(".")
        pair = stem.split(".")[-1]  # xxx-eng
        code = pair.split("-")[0]
        if ext == "eng" or not pair.endswith("-eng"):
            continue
        eng = f.with_name(f"{stem}.eng")
        other, english = _lines(f), _lines(eng)
        if len(other) != len(english):
            raise BloomforgeError(
                f"{f}: {len(other)} lines but {eng.name} has {len(english)}; "
                "Tatoeba pairs must be line-aligned"
            )
        lang, name = language(code)
        for i, (s, e) in enumerate(zip(other, english, strict=True)):
            fields = {"sentence": s, "english": e, "lang": lang, "lang_name": name}
            yield Example(lang, f"{f.name}:{i + 1}", fields)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").split("\n")[:-1]
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot read ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise BloomforgeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def read_hellaswag(path: Path) -> Iterator[Example]:
    for f in _files(path, "*.jsonl*"):
        opener = gzip.open if f.name.endswith(".gz") else open
        try:
            with opener(f, "rt", encoding="utf-8") as fh:
                lines = list(fh)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise BloomforgeError(f"{f}: cannot read ({e})") from e
        for i, line in enumerate(lines, 1):
            key = f"{f.name}:{i}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield Example("en", key, {}, f"not valid JSON ({e.msg})")
                continue
            if not isinstance(rec, dict):
                yield Example("en", key, {}, "not a JSON object")
                continue
            if "label" in rec:
                rec["label"] = str(rec["label"])  # HF hellaswag's label is a string ("0".."3")
            yield Example("en", str(rec.get("ind", key)), rec)


READERS = {"xquad": read_xquad, "tatoeba": read_tatoeba, "hellaswag": read_hellaswag}


def read_dataset(name: str, path: str | Path) -> Iterator[Example]:
    reader = READERS.get(name)
    if reader is None:
        raise BloomforgeError(
            f"--task {name}=...: unknown dataset; known: {', '.join(sorted(READERS))}"
        )
    return reader(Path(path))
