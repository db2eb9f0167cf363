"""A multilingual corpus from the machine itself: message catalogues and the Python stdlib.

In: a locale folder (`/usr/share/locale/<locale>/LC_MESSAGES/<domain>.mo`, GNU gettext's binary
catalogues, read with Python's `gettext.GNUTranslations`) and a folder of Python source (default:
this interpreter's standard library). Out: `OUT/<source>.jsonl`, one file per source (a message
domain, or `python-stdlib`), records `{"id", "text", "language", "metadata": {"source",
"language", "locale", "file"}}`, and `OUT/manifest.json` (bytes and documents per source and
language, catalogues skipped per reason, notes). Nothing is downloaded.

Language: the locale folder's name, normalised to ISO 639-1 where one exists (`pt_BR` -> `pt`,
`sr@latin` -> `sr`, `ast` stays `ast`; three-letter codes through the iso-codes tables in
/usr/share/iso-codes when installed). The English originals (msgids) are the `en` text; `en_*`
locales are then left out (their text is nearly the msgids). Programming code gets the language
`code`. A document is a run of consecutive translated messages of one catalogue, joined by line
breaks up to `document_bytes`; a catalogue's first document starts with its header (the msgid ""
entry), which names translators with e-mail addresses, left in on purpose for PII redaction.
"""

from __future__ import annotations

import gettext
import json
import os
import sysconfig
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.data.config import CorpusConfig
from bloomforge.data.prepare.config import SourceConfig

CODE_SOURCE, CODE_LANGUAGE = "python-stdlib", "code"
_ISO_TABLES = (
    "/usr/share/iso-codes/json/iso_639-3.json",
    "/usr/share/iso-codes/json/iso_639-2.json",
)
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib"}


@dataclass(frozen=True)
class Catalogue:
    path: Path
    domain: str
    locale: str  # the folder name, e.g. pt_BR or sr@latin
    language: str  # normalised, e.g. pt


@cache
def _alpha2_of_alpha3() -> dict[str, str]:
    table: dict[str, str] = {}
    for name in _ISO_TABLES:
        try:
            data = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for entries in data.values():
            for e in entries:
                if "alpha_2" in e:
                    for key in ("alpha_3", "bibliographic"):
                        if key in e:
                            table.setdefault(e[key], e["alpha_2"])
    return table


def normalise_language(locale: str) -> str:
    """`pt_BR` -> `pt`, `sr@latin` -> `sr`, `de_DE.UTF-8` -> `de`, `fra` -> `fr` (iso-codes)."""
    lang = locale.split("@")[0].split(".")[0].split("_")[0].lower()
    if len(lang) == 2:
        return lang
    return _alpha2_of_alpha3().get(lang, lang)


def find_catalogues(locale_dir: str | Path) -> list[Catalogue]:
    """Every `<locale>/LC_MESSAGES/<domain>.mo` under `locale_dir`, sorted by path."""
    root = Path(locale_dir)
    found = []
    for path in sorted(root.glob("*/LC_MESSAGES/*.mo")):
        if path.is_file():
            locale = path.parent.parent.name
            found.append(Catalogue(path, path.stem, locale, normalise_language(locale)))
    return found


def read_catalogue(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """(header, [(msgid, translation), ...]) in catalogue order; plural forms each a pair."""
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # the parsed .mo; no public accessor
    header = catalog.get("", "")
    pairs = []
    for key, text in catalog.items():
        msgid = key[0] if isinstance(key, tuple) else key
        if msgid and isinstance(text, str) and text.strip():
            pairs.append((msgid, text))
    return header, pairs


def _documents(header: str, texts: list[str], limit: int, budget: int) -> Iterator[str]:
    """Messages joined by newlines into documents of ~`limit` bytes; at most `budget` bytes."""
    parts, size = ([header.strip()] if header.strip() else []), 0
    for text in texts:
        n = len(text.encode("utf-8")) + 1
        if budget - n < 0:
            break
        budget -= n
        parts.append(text.strip("\n"))
        size += n
        if size >= limit:
            yield "\n".join(parts)
            parts, size = [], 0
    if parts and size:
        yield "\n".join(parts)


def choose_languages(cats: list[Catalogue], cfg: CorpusConfig) -> list[str]:
    """`include` first, then the languages with the most catalogue bytes, `languages` in all."""
    size: Counter[str] = Counter()
    for c in cats:
        if not (cfg.english_bytes > 0 and c.language == "en"):
            size[c.language] += c.path.stat().st_size
    chosen = [lang for lang in cfg.include if lang in size]
    for lang, n in size.most_common():
        if len(chosen) >= max(cfg.languages, len(cfg.include)):
            break
        if lang not in chosen and n >= cfg.min_language_bytes:
            chosen.append(lang)
    return chosen


class _Writer:
    """Appends records to OUT/<source>.jsonl and counts them per source and language."""

    def __init__(self, out: Path):
        self.out, self.files = out, {}
        self.sources: dict[str, dict[str, Any]] = {}

    def add(self, source: str, language: str, text: str, meta: dict[str, str]) -> None:
        info = self.sources.setdefault(
            source, {"file": f"{source}.jsonl", "documents": 0, "bytes": 0, "languages": {}}
        )
        if source not in self.files:
            self.files[source] = open(self.out / info["file"], "w", encoding="utf-8")  # noqa: SIM115  # files: in atomic_directory
        record = {
            "id": f"{source}/{meta.get('locale', language)}/{info['documents']}",
            "text": text,
            "language": language,
            "metadata": {"source": source, "language": language, **meta},
        }
        self.files[source].write(json.dumps(record, ensure_ascii=False) + "\n")
        n = len(text.encode("utf-8"))
        info["documents"] += 1
        info["bytes"] += n
        lang = info["languages"].setdefault(language, {"documents": 0, "bytes": 0})
        lang["documents"] += 1
        lang["bytes"] += n

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def gather_corpus(cfg: CorpusConfig, out: str | Path) -> dict[str, Any]:
    """Write the corpus files and manifest.json into `out` (an existing, empty folder)."""
    out = Path(out)
    writer = _Writer(out)
    skipped: Counter[str] = Counter()
    notes: list[str] = []
    cats = find_catalogues(cfg.locale_dir) if Path(cfg.locale_dir).is_dir() else []
    if not cats:
        notes.append(
            f"no message catalogues under {cfg.locale_dir}: continuing with the code source alone"
        )
    chosen = choose_languages(cats, cfg)
    # Domains found in most languages first: the languages then share parallel text (the same
    # programs' messages), and each language's cap cuts the same way.
    spread = Counter(c.domain for c in cats)
    per_lang: dict[str, list[Catalogue]] = defaultdict(list)
    for c in cats:
        if c.language in chosen:
            per_lang[c.language].append(c)
    english: dict[str, list[str]] = {}
    for lang in chosen:
        budget = cfg.max_bytes_per_language
        for c in sorted(per_lang[lang], key=lambda c: (-spread[c.domain], c.domain, c.locale)):
            if budget <= 0:
                break
            try:
                header, pairs = read_catalogue(c.path)
            except OSError as e:  # gettext: OSError(0, "Bad magic number") for a non-.mo file
                skipped[f"unreadable catalogue ({e.strerror or e})"] += 1
                continue
            except (UnicodeDecodeError, LookupError):
                skipped["text not in the catalogue's declared charset"] += 1
                continue
            except (IndexError, ValueError):  # a truncated table or header
                skipped["malformed catalogue"] += 1
                continue
            english.setdefault(c.domain, [m for m, _ in pairs])
            # One catalogue takes at most a quarter of its language's cap: several programs each.
            share = min(budget, max(cfg.document_bytes, cfg.max_bytes_per_language // 4))
            meta = {"locale": c.locale, "file": str(c.path)}
            for text in _documents(header, [t for _, t in pairs], cfg.document_bytes, share):
                writer.add(c.domain, lang, text, meta)
                budget -= len(text.encode("utf-8"))
    _add_english(writer, english, cfg)
    code_dir = Path(cfg.code_dir or sysconfig.get_paths()["stdlib"])
    if cfg.code_bytes > 0:
        _add_code(writer, code_dir, cfg.code_bytes, notes)
    writer.close()
    languages: dict[str, dict[str, int]] = {}
    for info in writer.sources.values():
        for lang, c in info["languages"].items():
            row = languages.setdefault(lang, {"documents": 0, "bytes": 0})
            row["documents"] += c["documents"]
            row["bytes"] += c["bytes"]
    manifest = {
        "locale_dir": str(cfg.locale_dir),
        "catalogues_found": len(cats),
        "languages_chosen": chosen,
        "code_dir": str(code_dir) if cfg.code_bytes > 0 else None,
        "sources": writer.sources,
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1]["bytes"])),
        "skipped": dict(skipped),
        "notes": notes,
    }
    files.write_json(out / "manifest.json", manifest)
    return manifest


def _add_english(writer: _Writer, msgids: dict[str, list[str]], cfg: CorpusConfig) -> None:
    budget = cfg.english_bytes
    share = max(cfg.document_bytes, cfg.english_bytes // 4)
    for domain, ids in msgids.items():
        if budget <= 0:
            break
        seen = list(dict.fromkeys(ids))
        for text in _documents("", seen, cfg.document_bytes, min(budget, share)):
            writer.add(domain, "en", text, {"locale": "msgid"})
            budget -= len(text.encode("utf-8"))


def _add_code(writer: _Writer, root: Path, budget: int, notes: list[str]) -> None:
    if not root.is_dir():
        notes.append(f"no Python source under {root}: no code source")
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = Path(dirpath) / name
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            n = len(text.encode("utf-8"))
            if not text.strip() or n > budget:
                continue
            writer.add(CODE_SOURCE, CODE_LANGUAGE, text, {"file": str(path.relative_to(root))})
            budget -= n
            if budget < 1000:
                return


def data_sources(manifest: dict[str, Any], corpus_dir: Path) -> list[SourceConfig]:
    """The `prepare.sources` of a gathered corpus: one jsonl source per message domain and one
    for the code; each record carries its own language in `metadata.language`."""
    return [
        SourceConfig(
            name=name,
            paths=[str(corpus_dir / info["file"])],
            format="jsonl",
            **({"language": CODE_LANGUAGE} if name == CODE_SOURCE else {}),
        )
        for name, info in sorted(manifest["sources"].items())
    ]
