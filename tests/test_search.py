"""`bloomforge data search` on a corpus prepared through the CLI (tests/prepared_corpus.py):
planted phrases are found with the provenance of the raw input (source, file, line, URL),
`--lang` restricts, and the FTS5 index is updated only when documents/ changes.

References: where the phrases were planted (file and line written by the test), and a plain
scan of the prepared files for a word (the index must find the same documents).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time

import pytest

from bloomforge.cli import main
from bloomforge.data.search import index_path, search, update_index
from prepared_corpus import PLANTED, prepare_planted


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return prepare_planted(tmp_path_factory.mktemp("search"))


def test_planted_phrases_found_with_provenance(prepared, capsys):
    out, inputs = prepared
    for phrase, (source, name, line) in PLANTED.items():
        hits = search(out, f'"{phrase}"')
        assert len(hits) == 1, phrase
        hit = hits[0]
        assert inputs[source].name == name
        assert (hit["source"], hit["file"], hit["line"]) == (source, str(inputs[source]), line)
        assert hit["language"] == ("fr" if source == "fr" else "en")
        assert f"[{phrase}]" in hit["snippet"]  # a phrase is marked as one span
        assert hit["url"] == ("https://example.net/page/1" if source == "web" else None)
    assert main(["data", "search", str(out), "quokka lantern"]) == 0
    printed = capsys.readouterr().out
    assert f"en [en] {inputs['en']}:6" in printed and "[quokka]" in printed
    assert main(["data", "search", str(out), "platypus"]) == 0
    assert "<https://example.net/page/1>" in capsys.readouterr().out


def test_building_the_index_prints_only_the_hits(prepared, tmp_path, capsys):
    """The first search of a folder builds its index; its output is still only the hit (two
    lines: where, then the snippet), not the index's counts (a debug log record)."""
    out, inputs = prepared
    copy = shutil.copytree(out, tmp_path / "prepared", ignore=shutil.ignore_patterns("search"))
    assert not index_path(copy).exists()
    assert main(["data", "search", str(copy), "quokka lantern"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"en [en] {inputs['en']}:6"), lines
    assert "[quokka]" in lines[1] and captured.err == ""
    assert index_path(copy).is_file()


def test_lang_restricts(prepared, capsys):
    out, _ = prepared
    assert search(out, "quokka", lang="fr") == []
    assert [h["line"] for h in search(out, "zephyr", lang="fr")] == [4]  # accents folded
    assert main(["data", "search", str(out), "quokka", "--lang", "fr"]) == 0
    assert "no document matches 'quokka' in language fr" in capsys.readouterr().out
    # every hit of a common word for --lang en is English, and fr ones are French
    for lang in ("en", "fr"):
        hits = search(out, "le OR the", lang=lang, limit=1000)
        assert hits and {h["language"] for h in hits} == {lang}
    # --source restricts to one source (web and en are both English)
    assert {h["source"] for h in search(out, "the", limit=1000)} == {"en", "web"}
    assert {h["source"] for h in search(out, "the", source="web", limit=1000)} == {"web"}
    assert main(["data", "search", str(out), "the", "--source", "web", "--limit", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(line.startswith("web [en]") for line in printed[::2])


def test_same_documents_as_a_plain_scan(prepared):
    out, _ = prepared
    expected = set()
    for path in sorted((out / "documents").rglob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                if "harbour" in doc["text"].lower().split():
                    expected.add(doc["id"])
    hits = search(out, "harbour", limit=10_000)
    assert expected and {h["id"] for h in hits} == expected
    assert len(search(out, "harbour", limit=3)) == 3  # --limit


def test_index_not_rebuilt_unless_documents_change(prepared):
    out, _ = prepared
    first = update_index(out)
    db = index_path(out)
    stamp = db.stat().st_mtime_ns
    again = update_index(out)  # 3 files: documents/{fr/fr,en/en,web/en}/00000.jsonl.gz
    assert (again.builds, again.wrote, again.unchanged) == (first.builds, False, 3)
    assert db.stat().st_mtime_ns == stamp and again.documents == first.documents
    # a file added (e.g. a rerun with another input) is indexed, and only it
    extra = out / "documents" / "en" / "en" / "00001.jsonl.gz"
    doc = {"text": "A wombat sang", "id": "x/1", "metadata": {"source": "en", "language": "en"}}
    with gzip.open(extra, "wt", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")
    added = update_index(out)
    assert (added.added, added.changed, added.removed, added.unchanged) == (1, 0, 0, 3)
    assert added.builds == first.builds + 1 and added.documents == first.documents + 1
    assert [h["id"] for h in search(out, "wombat")] == ["x/1"]
    # changed: the old text goes, the new one is found
    doc["text"] = "A koala sang"
    with gzip.open(extra, "wt", encoding="utf-8") as f:
        f.write(json.dumps(doc) + "\n")
    os.utime(extra, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime
    changed = update_index(out)
    assert (changed.added, changed.changed, changed.removed) == (0, 1, 0)
    assert search(out, "wombat") == [] and [h["id"] for h in search(out, "koala")] == ["x/1"]
    extra.unlink()
    gone = update_index(out)
    assert (gone.removed, gone.documents) == (1, first.documents)
    assert search(out, "koala") == []
    assert search(out, "quokka")  # the other files' rows are intact


def test_queries_that_are_not_fts5_syntax_and_errors(prepared, tmp_path, capsys):
    out, _ = prepared
    assert [h["line"] for h in search(out, '"quokka lantern')] == [6]  # unbalanced quote
    assert main(["data", "search", str(out), "   "]) != 0
    assert "the query is empty" in capsys.readouterr().err
    assert main(["data", "search", str(tmp_path), "x"]) != 0
    err = capsys.readouterr().err
    assert "documents: no such folder" in err and len(err.strip().splitlines()) == 1
