"""Web archives through `bloomforge data prepare`: WARC (HTML) and WET (text) records.

WARC files are written here with warcio (the writer of the library datatrove's WarcReader reads
with): HTML pages made of ../shared/data/corpus sentences with navigation and footer around them,
and records that give no text, one per reason. The reference is what was written: the sentences
of each page (and none of its boilerplate), its URL and WARC-Date, and one set-aside record per
planted failure. WET: cc_net's 3-record sample (../shared/data/web/ccnet_sample.warc.wet.txt).
"""

from __future__ import annotations

import gzip
import html
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from bloomforge.cli import main
from bloomforge.data.ledger import read_ledger
from bloomforge.documents.inputs import InputSpec, ReadStats, format_of, iter_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WET = DATA / "web" / "ccnet_sample.warc.wet.txt"
NAV = "Accueil | Actualités | Contact"
FOOTER = "Mentions légales et politique de cookies"


def _sentences(lang: str) -> list[str]:
    path = DATA / "corpus" / f"{lang}.txt"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return [s.strip() for s in path.read_text(encoding="utf-8").split("\n") if s.strip()]


def _page(title: str, paragraphs: list[str], charset: str = "utf-8") -> str:
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (
        f'<!DOCTYPE html><html><head><meta charset="{charset}"><title>{title}</title>'
        "<script>var tracker = 1;</script><style>p { color: black }</style></head><body>"
        f"<nav><ul>{''.join(f'<li><a href=/{w}>{w}</a></li>' for w in NAV.split(' | '))}</ul></nav>"
        f"<main><article><h1>{title}</h1>{body}</article></main>"
        f"<footer><a href=/legal>{FOOTER}</a></footer></body></html>"
    )


def _response(writer, url: str, date: str, content_type: str, body: bytes, status="200 OK"):
    headers = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(
        url,
        "response",
        payload=io.BytesIO(body),
        http_headers=headers,
        warc_headers_dict={"WARC-Date": date},
    )


# (url, date, language of the page) of the pages that must come out, in file order
PAGES = [
    ("https://exemple.fr/article/1", "2023-03-20T10:00:00Z", "fr"),
    ("https://ejemplo.es/noticia?id=7", "2023-03-21T11:30:00Z", "es"),
    ("https://exemple.fr/article/2", "2023-03-22T09:15:00Z", "fr"),
]
# record number in the file -> the reason it is set aside
ASIDE = {
    2: "not a response record",  # the request of page 1
    4: "non-text MIME type",  # image/png
    5: "charset error",  # a charset name that does not exist
    6: "charset error",  # declared UTF-8, bytes in Latin-1
    7: "bad HTML",  # binary data served as text/html
    8: "empty extraction",  # only a script
    9: "HTTP status not 2xx",  # a 404 page
}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    root = tmp_path_factory.mktemp("warc")
    fr, es = _sentences("fr"), _sentences("es")
    texts = [fr[0:6], es[0:6], fr[6:12]]
    with open(root / "crawl.warc.gz", "wb") as f:
        w = WARCWriter(f, gzip=True)
        (url1, date1, _), (url2, date2, _), (url3, date3, _) = PAGES
        page1 = _page("Un", texts[0]).encode()
        w.write_record(_response(w, url1, date1, "text/html; charset=utf-8", page1))
        get = io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
        kind = "application/http; msgtype=request"
        w.write_record(w.create_warc_record(url1, "request", payload=get, warc_content_type=kind))
        # ISO-8859-1 declared in the HTTP header, bytes in that charset: decoded right
        page2 = _page("Dos", texts[1], "iso-8859-1").encode("iso-8859-1")
        w.write_record(_response(w, url2, date2, "text/html; charset=ISO-8859-1", page2))
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        w.write_record(_response(w, "https://exemple.fr/logo.png", date1, "image/png", png))
        page = _page("Trois", fr[20:23]).encode()
        w.write_record(
            _response(w, "https://exemple.fr/k", date1, "text/html; charset=klingon-8", page)
        )
        latin = _page("Quatre", ["Café crème brûlée à volonté"]).encode("latin-1")
        w.write_record(
            _response(w, "https://exemple.fr/l", date1, "text/html; charset=utf-8", latin)
        )
        binary = b"<html>" + bytes(range(256)) * 8
        w.write_record(_response(w, "https://exemple.fr/b", date1, "text/html", binary))
        empty = b"<html><head><script>document.write('x')</script></head><body></body></html>"
        w.write_record(_response(w, "https://exemple.fr/e", date1, "text/html", empty))
        w.write_record(
            _response(w, "https://exemple.fr/404", date1, "text/html", page, "404 Not Found")
        )
        w.write_record(_response(w, url3, date3, "text/html", _page("Cinq", texts[2]).encode()))
        # the same URL crawled again (www, trailing slash): the exact-URL dedup step removes it
        again = _page("Six", fr[30:36]).encode()
        w.write_record(
            _response(
                w, "https://www.exemple.fr/article/1/", "2023-04-01T00:00:00Z", "text/html", again
            )
        )
    config = {"sources": [{"name": "crawl", "paths": ["crawl.warc.gz"], "pii": False}]}
    (root / "data.yaml").write_text(json.dumps(config))
    assert (
        main(["data", "prepare", "--config", str(root / "data.yaml"), "--out", str(root / "out")])
        == 0
    )
    return root, texts


def _documents(out: Path, source: str) -> list[dict]:
    docs = []
    for path in sorted((out / "documents" / source).rglob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            docs += [json.loads(line) for line in f]
    return sorted(docs, key=lambda d: d["metadata"]["line"])


def test_warc_pages_extracted_with_url_and_date(web):
    root, texts = web
    docs = _documents(root / "out", "crawl")
    assert [
        (d["metadata"]["url"], d["metadata"]["date"], d["metadata"]["language"]) for d in docs
    ] == PAGES
    assert [d["metadata"]["line"] for d in docs] == [1, 3, 10]  # the record numbers in the file
    for doc, sentences in zip(docs, texts, strict=True):
        for sentence in sentences:
            assert sentence in doc["text"]
        assert "tracker" not in doc["text"] and FOOTER not in doc["text"]
        assert "Actualités" not in doc["text"]  # navigation is not main content
        assert doc["metadata"]["orig_id"].startswith("<urn:uuid:")


def test_warc_failures_set_aside_with_reasons(web):
    root, _ = web
    aside = [
        json.loads(line)
        for p in sorted((root / "out" / "malformed" / "crawl").glob("*.jsonl"))
        for line in p.read_text(encoding="utf-8").splitlines()
    ]
    assert {a["line"]: a["reason"] for a in aside} == ASIDE
    assert all(a["file"].endswith("crawl.warc.gz") and "WARC-Type" in a["record"] for a in aside)
    stats = json.loads((root / "out" / "stats.json").read_text())
    assert stats["reader"]["crawl"]["skipped"] == dict(Counter(ASIDE.values()))
    assert stats["reader"]["crawl"]["records"] == 11
    # the same page crawled twice: the later copy goes at the exact-URL step
    removed = Counter()
    for row in read_ledger(root / "out" / "logs"):
        if row.step == "dedup_exact":
            removed[row.outcome] += row.documents
    assert removed["exact_url"] == 1
    assert all(t["adds_up"] for t in stats["totals"].values())


def test_wet_sample_parses_through_prepare(tmp_path):
    if not WET.is_file():
        pytest.skip(f"{WET} missing")
    assert format_of(Path("CC-MAIN-x.warc.wet.gz")) == "wet" and format_of(WET) == "text"
    stats = ReadStats()
    docs = list(iter_documents(InputSpec(WET), stats, fmt="wet"))
    assert [d.url for d in docs] == [
        "http://sample_english.com",
        "http://sample_chinese.zh",
        "http://sample_russian.ru",
    ]
    assert docs[0].text.startswith("Famous Mark Twain Quotes\nDon't part with your illusions.")
    assert docs[1].text.endswith("真理不是。") and docs[2].date == "2019-03-18T00:00:02Z"
    assert stats.skipped == {"not a response record": 1}  # the warcinfo record
    config = {
        "sources": [{"name": "cc", "paths": [str(WET)], "format": "wet", "filters": False}],
    }
    (tmp_path / "data.yaml").write_text(json.dumps(config))
    assert (
        main(
            [
                "data",
                "prepare",
                "--config",
                str(tmp_path / "data.yaml"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    out = _documents(tmp_path / "out", "cc")
    assert [d["text"] for d in out] == [d.text for d in docs]
    assert [d["metadata"]["date"] for d in out] == [d.date for d in docs]


@pytest.mark.parametrize(("name", "share"), [("cut.warc.gz", 2 / 3), ("cut.warc", 0.9)])
def test_truncated_warc_is_set_aside_not_a_crash(web, tmp_path, name, share):
    root, _ = web
    whole = (root / "crawl.warc.gz").read_bytes()
    if not name.endswith(".gz"):
        whole = gzip.decompress(whole)  # plain WARC: the last record's block is cut
    (tmp_path / name).write_bytes(whole[: int(len(whole) * share)])
    stats, aside = ReadStats(), []

    def on_skip(reason: str, line: int, raw: str, size: int) -> None:
        aside.append(reason)

    docs = list(iter_documents(InputSpec(tmp_path / name), stats, on_skip=on_skip))
    assert [d.url for d in docs][:2] == [PAGES[0][0], PAGES[1][0]]
    assert (
        aside[-1] == "corrupt or truncated file" and stats.skipped["corrupt or truncated file"] == 1
    )
