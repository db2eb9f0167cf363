"""`bloomforge data search` speed: index build time and query latency vs a plain scan.

The corpus is a prepared folder: PREPARED if given, else the demo's (`bloomforge demo --until
data`, the message catalogues of /usr/share/locale and the Python standard library, prepared as
the demo recipe says) built into a temporary folder. Measured in this process:
- build: the FTS5 index from nothing (`update_index` on a folder without one), median of
  --rounds; then `update_index` when nothing changed (a stat per file);
- query: for --queries words taken from the corpus (every 1/Nth of its distinct words of 4+
  letters ranked by document frequency, so common and rare words both appear), the latency of
  `search(PREPARED, word, limit=10)` as the CLI runs it (its freshness check included) and
  with `update=False` (the query alone), and of the peer, a `grep -c`-like scan in
  Python over the same files: decompress, parse each JSON line, count documents whose lower-cased
  text contains the word (what one would do without an index). Order alternates each round;
  medians over rounds and queries, ratio = scan / search.

    python bench/search.py                     # builds the demo's prepared corpus first
    python bench/search.py PREPARED --rounds 5
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bloomforge.data.search import index_path, search, update_index


def demo_prepared(root: Path) -> Path:
    run = root / "demo"
    cmd = [sys.executable, "-m", "bloomforge", "demo", "--until", "data", "--out", str(run)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return run / "data"


def documents(prepared: Path) -> list[Path]:
    return sorted((prepared / "documents").rglob("*.jsonl.gz"))


def scan_count(files: list[Path], word: str) -> int:
    """The peer: documents whose lower-cased text contains `word`, by reading every file."""
    n = 0
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if word in json.loads(line)["text"].lower():
                    n += 1
    return n


def pick_queries(files: list[Path], count: int) -> list[str]:
    df: Counter = Counter()
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                df.update(set(re.findall(r"[^\W\d_]{4,}", json.loads(line)["text"].lower())))
    ranked = [w for w, _ in df.most_common()]
    step = max(1, len(ranked) // count)
    return ranked[::step][:count]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prepared", nargs="?", help="a `data prepare` folder (default: the demo's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        source = Path(args.prepared) if args.prepared else demo_prepared(Path(tmp))
        prepared = Path(tmp) / "prepared"  # a copy: the index is written beside the documents
        shutil.copytree(source / "documents", prepared / "documents")
        files = documents(prepared)
        docs = scan_count(files, "")  # every document contains the empty string
        size = sum(p.stat().st_size for p in files)
        builds = []
        for _ in range(args.rounds):
            shutil.rmtree(index_path(prepared).parent, ignore_errors=True)
            builds.append(timed(lambda: update_index(prepared)))
        noop = statistics.median(timed(lambda: update_index(prepared)) for _ in range(5))
        queries = pick_queries(files, args.queries)
        ours: list[float] = []
        alone: list[float] = []
        peer: list[float] = []
        for r in range(args.rounds):
            for q in queries:
                runs = [
                    (ours, lambda q=q: search(prepared, q, limit=10)),
                    (alone, lambda q=q: search(prepared, q, limit=10, update=False)),
                    (peer, lambda q=q: scan_count(files, q)),
                ]
                for out, fn in runs if r % 2 == 0 else runs[::-1]:
                    out.append(timed(fn))
        hits = {q: len(search(prepared, q, limit=10**9)) for q in queries}
        index_mb = index_path(prepared).stat().st_size / 1e6
    s, a, p = statistics.median(ours), statistics.median(alone), statistics.median(peer)
    print(f"corpus: {len(files)} files, {docs:,} documents, {size / 1e6:.1f} MB gzip")
    print(
        f"queries: {len(queries)} words, documents matched from {min(hits.values())} to "
        f"{max(hits.values())} (e.g. {', '.join(queries[:5])})"
    )
    print()
    print("| what | bloomforge (FTS5) | plain scan | ratio |")
    print("|---|---|---|---|")
    print(f"| index build, from nothing (s) | {statistics.median(builds):.2f} | - | - |")
    print(f"| index update, nothing changed (ms) | {noop * 1e3:.2f} | - | - |")
    print(f"| query latency, as the CLI (ms) | {s * 1e3:.2f} | {p * 1e3:.1f} | {p / s:.0f}x |")
    print(f"| query latency, query only (ms) | {a * 1e3:.2f} | {p * 1e3:.1f} | {p / a:.0f}x |")
    print(f"| index size (MB) | {index_mb:.1f} | - | - |")


if __name__ == "__main__":
    main()
