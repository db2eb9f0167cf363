"""Documents/s of bloomforge's ROOTS filter chain vs datatrove's Gopher quality + repetition pair.

bloomforge: language identification (py3langid, "auto") + every ROOTS filter that can run here
(number of words, character and word repetition, special characters, stop words, flagged words
from BigScience's list, language-id score; perplexity is off without kenlm), each a ledger-
counted datatrove filter. Peer: datatrove's `GopherQualityFilter` + `GopherRepetitionFilter` with
default settings. Both run as datatrove steps (`step.run` chained generators) over the same
documents in this process: the web documents of ../shared/data/web/*.jsonl.gz and the UD test
sentences grouped into paragraphs of 10. They alternate for several rounds (order flipped each
round); medians and the ratio bloomforge / Gopher (documents/s) are printed. Goal: ratio >= 1.0.
Times are CPU seconds of this process (`time.process_time`; both chains are single-threaded), so
other work on a shared machine does not skew the ratio; wall seconds are printed too.

datatrove's default English word tokenizer is spaCy's, which is not installed here and whose
models are not downloadable at run time; the Gopher pair gets a datatrove `WordTokenizer` built on
NLTK's Treebank-style `NLTKWordTokenizer` (the word splitter of datatrove's NLTK tokenizer, without
its punkt sentence split, which needs a download). `--peer-split` also times the pair with a bare
`str.split` tokenizer, the fastest any tokenizer could be.

    python bench/data_filters.py [--rounds 5] [--peer-split] [--lid-chars 5000]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.word_tokenizers import WordTokenizer, strip_strings

from bloomforge.data.filters import EachFilterAlone, FilterConfig, filter_steps, language_id_step

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class NLTKWords(WordTokenizer):
    """NLTK's Treebank-style word tokenizer (no data download needed)."""

    def __init__(self) -> None:
        super().__init__("en")
        from nltk.tokenize import NLTKWordTokenizer

        self._tok = NLTKWordTokenizer()

    def word_tokenize(self, text: str) -> list[str]:
        return strip_strings(self._tok.tokenize(text))

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


class SplitWords(NLTKWords):
    def word_tokenize(self, text: str) -> list[str]:
        return text.split()


def load_texts() -> list[tuple[str, str]]:
    """(text, source) of every web document and UD paragraph (10 sentences each)."""
    texts = []
    for path in sorted(glob.glob(str(SHARED / "web" / "*.jsonl.gz"))):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [(json.loads(line)["text"], "web") for line in f if line.strip()]
    for path in sorted(glob.glob(str(SHARED / "ud" / "*.txt"))):
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        texts += [(" ".join(lines[i : i + 10]), "ud") for i in range(0, len(lines), 10)]
    return texts


def run_chain(steps: list, texts: list[tuple[str, str]]) -> tuple[float, float, int]:
    docs = [
        Document(text=t, id=str(i), metadata={"source": s, "language": "auto"})
        for i, (t, s) in enumerate(texts)
    ]
    start, cpu = time.perf_counter(), time.process_time()
    data = iter(docs)
    for step in steps:
        data = step.run(data)
    kept = sum(1 for _ in data)
    return time.process_time() - cpu, time.perf_counter() - start, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peer-split", action="store_true", help="also time Gopher with str.split")
    p.add_argument("--lid-chars", type=int, default=0, help="also time LID on the first N chars")
    args = p.parse_args()
    if not (SHARED / "web").is_dir():
        raise SystemExit(f"no benchmark data: {SHARED / 'web'} is missing")
    texts = load_texts()
    mb = sum(len(t.encode("utf-8")) for t, _ in texts) / 1e6
    print(f"{len(texts):,} documents ({sum(s == 'web' for _, s in texts)} web), {mb:.2f} MB")

    config = FilterConfig(flagged_words=str(SHARED / "filters" / "flagged_words.json"))
    ours = [language_id_step(config, "auto"), *filter_steps(config)]
    nltk_tok = NLTKWords()
    peers: dict[str, Callable[[], list]] = {
        "gopher": lambda: [
            GopherQualityFilter(language=nltk_tok),
            GopherRepetitionFilter(language=nltk_tok),
        ]
    }
    if args.peer_split:
        split_tok = SplitWords()
        peers["gopher (str.split)"] = lambda: [
            GopherQualityFilter(language=split_tok),
            GopherRepetitionFilter(language=split_tok),
        ]
    chain = filter_steps(config)
    # as `data prepare` runs it: also every filter's verdict on every document (the report's
    # "each filter alone" figure)
    ours_alone = [language_id_step(config, "auto"), EachFilterAlone(chain), *chain]
    runners: dict[str, Callable[[], tuple[float, float, int]]] = {
        "bloomforge": lambda: run_chain(ours, texts),
        "bloomforge + each-filter-alone stats": lambda: run_chain(ours_alone, texts),
    }
    if args.lid_chars:
        capped = replace(config, lid_text_chars=args.lid_chars)
        ours_capped = [language_id_step(capped, "auto"), *filter_steps(capped)]
        runners[f"bloomforge (lid_text_chars={args.lid_chars})"] = lambda: run_chain(
            ours_capped, texts
        )
    for name, make in peers.items():
        steps = make()
        runners[name] = lambda steps=steps: run_chain(steps, texts)
    kept = {name: fn()[2] for name, fn in runners.items()}  # warm-up: models, regexes, caches
    times: dict[str, list[float]] = {name: [] for name in runners}
    walls: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            cpu, wall, _ = runners[name]()
            times[name].append(cpu)
            walls[name].append(wall)
        line = ", ".join(f"{n} {len(texts) / times[n][-1]:,.0f} docs/s" for n in order)
        print(f"round {r + 1}: {line}", flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["gopher"] / med["bloomforge"]
    print(f"\nratio bloomforge / gopher (docs/s) {ratio:.2f} (goal >= 1.0)\n")
    print("| chain | median CPU s | docs/s | MB/s | median wall s | kept |")
    print("|---|---|---|---|---|---|")
    for n in order:
        wall = statistics.median(walls[n])
        print(
            f"| {n} | {med[n]:.3f} | {len(texts) / med[n]:,.0f} | {mb / med[n]:.2f} "
            f"| {wall:.3f} | {kept[n]} |"
        )
    print(f"| ratio bloomforge / gopher | | {ratio:.2f} | | | |")


if __name__ == "__main__":
    main()
