"""`bloomforge data inspect` on a corpus prepared through the CLI with planted PII, short and
repetitive documents and an exact duplicate (tests/prepared_corpus.py).

References: the prepared folder's own removal records (excluded/), hand counts of the planted
documents, BigScience's published thresholds (parameters_filtering.json: en number_words >= 20,
fr >= 13, en character_repetition <= 0.106) and BigScience's character-repetition formula
computed here from its definition.
"""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bloomforge.cli import main
from prepared_corpus import ORIGINALS, PII_COUNTS, REPEAT_EN, prepare_planted


class _Page(HTMLParser):
    """Rows of the viewer (data-* attributes), cluster cells and the PII table's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.clusters: list[dict] = []
        self.pii: list[list[str]] = []
        self._in_pii = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-id" in a:
            self.rows.append(a)
        if tag == "table" and a.get("class") == "cluster":
            self.clusters.append({"method": a["data-method"], "members": []})
        if tag == "div" and "data-status" in a and self.clusters:
            self.clusters[-1]["members"].append((a["data-id"], a["data-status"]))
        if tag == "table" and a.get("class") == "pii":
            self._in_pii = True
        if self._in_pii and tag == "tr":
            self.pii.append([])
        if self._in_pii and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_pii = False
        if tag in ("td", "th") and self._cell is not None:
            self.pii[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    out, _ = prepare_planted(root)
    page = root / "viewer.html"
    assert main(["data", "inspect", str(out), "--out", str(page), "--sample", "50"]) == 0
    text = page.read_text(encoding="utf-8")
    return out, text, _parse(text)


def _excluded(out: Path) -> list[dict]:
    docs = []
    for path in sorted((out / "excluded").rglob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f]
    return docs


def test_no_pii_original_anywhere_and_counts_by_type(viewer):
    out, text, page = viewer
    restricted = [
        json.loads(line)["original"]
        for path in (out / "restricted" / "pii").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(restricted) == sorted(ORIGINALS)  # the prepared folder did find them all
    for original in ORIGINALS:
        assert original not in text
        assert original.split("@")[0] not in text  # not even the local part
    assert "PI:EMAIL" in text and "PI:IP" in text  # documents that held PII are shown, redacted
    header, *rows = page.pii
    table = {r[0]: dict(zip(header[1:-1], r[1:-1], strict=True)) for r in rows}
    for lang, counts in PII_COUNTS.items():
        for kind in header[1:-1]:
            assert table[lang][kind] == str(counts.get(kind, 0)), (lang, kind)
    assert table["all"] == {"EMAIL": "3", "IP": "2"}


def test_removed_documents_under_their_filter_with_value_and_threshold(viewer):
    out, text, page = viewer
    removed = {(r["data-id"], r["data-filter"]): r for r in page.rows if r["class"] == "removed"}
    excluded = _excluded(out)
    assert len(excluded) == 8  # 3 short + 5 repetitive (the ledger agrees below)
    assert {(d["id"], d["metadata"]["filter_step"]) for d in excluded} == set(removed)
    # hand-counted words of the planted short documents (fr: 4 < 13; en: 6 and 4 < 20)
    assert float(removed[("fr/0/32", "number_words")]["data-value"]) == 4
    assert float(removed[("en/0/31", "number_words")]["data-value"]) == 6
    assert float(removed[("en/0/32", "number_words")]["data-value"]) == 4
    assert "removed if &lt; 13 or &gt; 100,000" in text.split('id="fr-number_words"')[1][:300]
    assert "removed if &lt; 20 or &gt; 100,000" in text.split('id="en-number_words"')[1][:300]
    # character repetition: BigScience's ratio (n = 10 for en), from its definition
    for doc in excluded:
        if doc["metadata"]["filter_step"] != "character_repetition":
            continue
        grams = Counter(doc["text"][i : i + 10] for i in range(len(doc["text"]) - 9))
        freq = sorted(grams.values(), reverse=True)
        k = min(math.isqrt(len(freq)), sum(f > 1 for f in freq))
        expected = sum(freq[:k]) / sum(freq)
        shown = float(removed[(doc["id"], "character_repetition")]["data-value"])
        assert shown == pytest.approx(expected) and shown > 0.106
    assert "removed if &gt; 0.106" in text
    assert REPEAT_EN.split(" near ")[0] in text  # the planted repetitive document is shown


def test_kept_documents_nearest_the_threshold_are_on_the_kept_side(viewer):
    out, _, page = viewer
    near = [r for r in page.rows if r["class"] == "near" and r["data-filter"] == "number_words"]
    fr = [float(r["data-value"]) for r in near if r["data-id"].startswith("fr/")]
    with gzip.open(out / "work" / "filtered" / "fr" / "00000.jsonl.gz", "rt") as f:
        kept_fr = sum(1 for _ in f)
    assert len(fr) == kept_fr  # --sample 50 covers every kept fr document
    assert all(v >= 13 for v in fr) and fr == sorted(fr)  # nearest the minimum first
    excluded_ids = {d["id"] for d in _excluded(out)}
    assert not excluded_ids & {r["data-id"] for r in near}


def test_duplicate_cluster_shows_kept_copy_beside_removed(viewer):
    _, _, page = viewer
    exact = [c for c in page.clusters if c["method"] == "exact_text"]
    # fr.txt line 31 is a copy of line 1 (ids are SOURCE/FILE/LINE)
    assert exact == [
        {"method": "exact_text", "members": [("fr/0/1", "kept"), ("fr/0/31", "exact_text")]}
    ]
    for cluster in page.clusters:
        _, *rest = cluster["members"]
        assert rest and all(status == cluster["method"] for _, status in rest)


def test_sample_and_default_out(viewer, capsys):
    out, _, _ = viewer
    assert main(["data", "inspect", str(out), "--sample", "1"]) == 0
    page = out / "inspect.html"
    assert f"wrote {page}" in capsys.readouterr().out
    rows = [r for r in _parse(page.read_text()).rows if r["class"] == "removed"]
    en_short = [r for r in rows if r["data-filter"] == "number_words" and "en/" in r["data-id"]]
    assert len(en_short) == 1 and "(1 of 2 shown)" in page.read_text()
    # --scan 1: one kept fr document is read, so one is shown nearest each threshold
    assert main(["data", "inspect", str(out), "--scan", "1"]) == 0
    near = [r for r in _parse(page.read_text()).rows if r["class"] == "near"]
    fr_words = [r for r in near if r["data-filter"] == "number_words" and "fr/" in r["data-id"]]
    assert [r["data-id"] for r in fr_words] == ["fr/0/1"]  # the first line of fr.txt


def test_the_command_prints_where_it_wrote_once(viewer, tmp_path, capsys):
    """Its one line of output: the library logs nothing of its own (it once logged the same
    `wrote PATH` the command prints)."""
    out, _, _ = viewer
    page = tmp_path / "once.html"
    assert main(["data", "inspect", str(out), "--out", str(page), "--sample", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote {page}\n" and captured.err == ""


def test_errors_are_one_line(viewer, tmp_path, capsys):
    out, _, _ = viewer
    other = tmp_path / "notes.html"
    other.write_text("<html><title>mine</title></html>")
    assert main(["data", "inspect", str(out), "--out", str(other)]) != 0
    err = capsys.readouterr().err
    assert "not an earlier `data inspect` page" in err and len(err.strip().splitlines()) == 1
    assert other.read_text() == "<html><title>mine</title></html>"
    assert main(["data", "inspect", str(tmp_path / "nothing")]) != 0
    assert "stats.json: no such file" in capsys.readouterr().err
