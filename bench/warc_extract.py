"""WARC text extraction: `data prepare`'s reading path vs datatrove's WarcReader + Trafilatura.

The WARC files (no real crawl is in ../shared/data) are written here with warcio, laid out as
Common Crawl's: per page a request, a response and a metadata record, gzip per record. Pages are
HTML made of ../shared/data/corpus sentences in 8 languages (8-40 sentences per page) inside
boilerplate: head with script and style, a navigation list, a sidebar, comments, a footer.

Timed on the same files in this process, alternating order, median of --rounds:
- bloomforge: `bloomforge.documents.inputs.iter_documents` (warcio records -> charset -> resiliparse
  main-content extraction), what the reader step of `data prepare` runs;
- datatrove: `WarcReader` -> `Trafilatura` (datatrove's defaults: favour_precision, the extractor
  in its sandbox process with a 1 s timeout per page), as a datatrove pipeline runs them;
- datatrove reader + trafilatura inline: the same without the sandbox (the extractor alone).
MB/s is uncompressed WARC bytes per second; docs is what each one returned. Quality against what
was written: `kept` the share of each page's sentences found in its text (mean over pages),
`leak` the share of texts holding boilerplate (the navigation, sidebar or footer).

    python bench/warc_extract.py              # about 2 minutes on 2 shared cores
    python bench/warc_extract.py --pages 4000 --files 4
"""

from __future__ import annotations

import argparse
import gzip
import html
import io
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from bloomforge.documents.inputs import InputSpec, iter_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGS = ("en", "fr", "es", "pt", "id", "vi", "ca", "eu")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pages", type=int, default=2000, help="HTML pages in all")
    p.add_argument("--files", type=int, default=4, help="WARC files they are spread over")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


BOILERPLATE = ("Section 7", "Related", "All rights reserved", "Privacy")


def page(rng: random.Random, lines: list[str], title: str, truth: list[str]) -> str:
    truth += rng.sample(lines, rng.randint(8, 40))
    body = "".join(f"<p>{html.escape(s)}</p>\n" for s in truth)
    links = "".join(f'<li><a href="/s/{i}">Section {i}</a></li>' for i in range(12))
    side = "".join(f'<li><a href="/t/{i}">{html.escape(lines[i])[:40]}</a></li>' for i in range(6))
    return (
        f'<!DOCTYPE html><html lang="x"><head><meta charset="utf-8"><title>{title}</title>'
        "<script>window.dataLayer=[];function g(){dataLayer.push(arguments)}</script>"
        "<style>body{font:14px sans-serif}.nav li{display:inline}</style></head><body>"
        f'<header><nav class="nav"><ul>{links}</ul></nav></header><!-- ad slot -->'
        f'<div class="content"><article><h1>{title}</h1>{body}</article>'
        f"<aside><h3>Related</h3><ul>{side}</ul></aside></div>"
        "<footer><p>Copyright 2024. All rights reserved.</p><a href=/privacy>Privacy</a>"
        "</footer></body></html>"
    )


def write_warcs(
    folder: Path, pages: int, files: int, seed: int, truth: dict[str, list[str]]
) -> int:
    """Writes the WARC files and each page's sentences into `truth`; returns the uncompressed
    size in bytes."""
    rng = random.Random(seed)
    corpus = {
        lang: [s for s in (DATA / "corpus" / f"{lang}.txt").read_text().split("\n") if s.strip()]
        for lang in LANGS
    }
    raw = 0
    for f in range(files):
        path = folder / f"CC-MAIN-bench-{f:05d}.warc.gz"
        with open(path, "wb") as out:
            writer = WARCWriter(out, gzip=True)
            for i in range(f, pages, files):
                lang = LANGS[i % len(LANGS)]
                url = f"https://site{i % 97}.example/{lang}/page/{i}"
                body = page(rng, corpus[lang], f"Page {i}", truth.setdefault(url, [])).encode()
                get = f"GET /{lang}/page/{i} HTTP/1.1\r\nHost: site.example\r\n\r\n".encode()
                writer.write_record(
                    writer.create_warc_record(
                        url,
                        "request",
                        payload=io.BytesIO(get),
                        warc_content_type="application/http; msgtype=request",
                    )
                )
                headers = StatusAndHeaders(
                    "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
                )
                writer.write_record(
                    writer.create_warc_record(
                        url, "response", payload=io.BytesIO(body), http_headers=headers
                    )
                )
                meta = b"fetchTimeMs: 120\r\n"
                writer.write_record(
                    writer.create_warc_record(
                        url,
                        "metadata",
                        payload=io.BytesIO(meta),
                        warc_content_type="application/warc-fields",
                    )
                )
        with gzip.open(path, "rb") as f_in:
            raw += len(f_in.read())
    return raw


Texts = list[tuple[str, str]]  # (url, extracted text)


def run_bloomforge(folder: Path) -> Texts:
    out = []
    for path in sorted(folder.glob("*.warc.gz")):
        out += [(d.url or "", d.text) for d in iter_documents(InputSpec(path))]
    return out


def run_datatrove(folder: Path) -> Texts:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    reader = WarcReader(str(folder), glob_pattern="*.warc.gz")
    extractor = Trafilatura()  # datatrove's defaults (favour_precision, timeout 1 s)
    return [(d.metadata["url"], d.text) for d in extractor.run(reader.run(None, 0, 1), 0, 1)]


def run_datatrove_inline(folder: Path) -> Texts:
    import trafilatura
    from datatrove.pipeline.readers import WarcReader

    out = []
    for doc in WarcReader(str(folder), glob_pattern="*.warc.gz").run(None, 0, 1):
        text = trafilatura.extract(
            doc.text, favor_precision=True, include_comments=False, deduplicate=True
        )
        if text:
            out.append((doc.metadata["url"], text))
    return out


def quality(texts: Texts, truth: dict[str, list[str]]) -> tuple[float, float]:
    """(mean share of each page's sentences found in its text, share of texts with boilerplate)"""
    kept = [sum(s.strip() in text for s in truth[url]) / len(truth[url]) for url, text in texts]
    leak = [any(b in text for b in BOILERPLATE) for _, text in texts]
    return statistics.mean(kept) if kept else 0.0, statistics.mean(leak) if leak else 0.0


METHODS: dict[str, Callable[[Path], Texts]] = {
    "bloomforge data prepare reader (warcio + resiliparse)": run_bloomforge,
    "datatrove WarcReader + Trafilatura step": run_datatrove,
    "datatrove WarcReader + trafilatura inline": run_datatrove_inline,
}


def main() -> None:
    args = parse()
    import logging

    from datatrove.utils.logging import logger

    logger.remove()  # datatrove's per-step messages
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-warc-") as tmp:
        folder = Path(tmp)
        truth: dict[str, list[str]] = {}
        raw = write_warcs(folder, args.pages, args.files, args.seed, truth)
        size = sum(p.stat().st_size for p in folder.glob("*.warc.gz"))
        print(
            f"{args.pages} pages in {args.files} files: {raw / 1e6:.1f} MB of WARC "
            f"({size / 1e6:.1f} MB gzipped), {args.rounds} rounds",
            flush=True,
        )
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        docs: dict[str, int] = {}
        scores: dict[str, tuple[float, float]] = {}
        names = list(METHODS)
        for r in range(args.rounds):  # alternate the order: the machine is shared
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                texts = METHODS[name](folder)
                times[name].append(time.perf_counter() - start)
                docs[name], scores[name] = len(texts), quality(texts, truth)
                print(f"  round {r + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
    base = statistics.median(times[names[1]])
    print("\n| method | docs | kept | leak | s (median) | MB/s | vs datatrove |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        secs = statistics.median(times[name])
        kept, leak = scores[name]
        print(
            f"| {name} | {docs[name]} | {kept:.3f} | {leak:.3f} | {secs:.2f} | "
            f"{raw / 1e6 / secs:.1f} | {base / secs:.2f}x |"
        )


if __name__ == "__main__":
    main()
