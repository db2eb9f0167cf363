"""`data prepare`'s default near dedup keeps one document per family; `preset: roots` is SimHash.

Planted families in real sentences (../shared/data/corpus/<lang>.txt, 12-sentence documents):
French as in issue 19 (10 families of exact copies, 10 whose copy has one word changed in the
middle or at the end), and in Spanish, Portuguese and Vietnamese copies with 1, 2, 5 and 10 % of
their words substituted. Run through `bloomforge data prepare --config` as a user would.
Reference for the roots preset: a brute-force SimHash search (every pair, Hamming <= 4, window 6)
plus exact normalised text, first document of each connected group kept.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from bloomforge.cli import main
from bloomforge.data.dedup.text import text_key, text_simhash

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATES = (0.01, 0.02, 0.05, 0.10)
SENTENCES = 12


def _sentences(lang: str) -> list[str]:
    path = DATA / "corpus" / f"{lang}.txt"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return [s.strip() for s in path.read_text(encoding="utf-8").split("\n") if s.strip()]


def _substitute(text: str, positions: list[int], rng: random.Random, pool: list[str]) -> str:
    words = text.split(" ")
    for i in positions:
        words[i] = next(w for w in iter(lambda: rng.choice(pool), None) if w != words[i])
    return " ".join(words)


def _corpus() -> dict[str, list[tuple[str, str, str]]]:
    """language -> [(id, family, text)] in file order; family "" for documents on their own."""
    rng = random.Random(19)
    out: dict[str, list[tuple[str, str, str]]] = {}
    for lang, families in (("fr", 20), ("es", 5), ("pt", 5), ("vi", 5)):
        lines = _sentences(lang)
        docs = [" ".join(lines[SENTENCES * i : SENTENCES * (i + 1)]) for i in range(families + 3)]
        pool = " ".join(lines[-200:]).split(" ")  # replacement words from other sentences
        rows: list[tuple[str, str, str]] = []
        for f in range(families):
            base = docs[f]
            n = len(base.split(" "))
            if lang == "fr" and f < 10:  # an exact copy (after ROOTS' normalisation)
                copy = base.upper()
            elif lang == "fr":  # one word changed, in the middle or at the end
                copy = _substitute(base, [n // 2 if f % 2 else n - 1], rng, pool)
            else:
                rate = RATES[f % len(RATES)] if f < len(RATES) else 0.10
                count = max(1, round(rate * n))
                copy = _substitute(base, sorted(rng.sample(range(n), count)), rng, pool)
            rows += [(f"{lang}-{f}-a", f"{lang}-{f}", base), (f"{lang}-{f}-b", f"{lang}-{f}", copy)]
        rows += [(f"{lang}-single-{i}", "", docs[families + i]) for i in range(3)]
        out[lang] = rows
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    corpus = _corpus()
    (root / "in").mkdir()
    for lang, rows in corpus.items():
        with open(root / "in" / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            for doc_id, _, text in rows:
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    return root, corpus


def _prepare(root: Path, name: str, dedup: dict) -> set[str]:
    config = {
        "sources": [{"name": "web", "paths": ["in"], "filters": False, "pii": False}],
        "dedup": dedup,
    }
    (root / f"{name}.yaml").write_text(json.dumps(config))
    assert (
        main(["data", "prepare", "--config", str(root / f"{name}.yaml"), "--out", str(root / name)])
        == 0
    )
    kept = set()
    for path in (root / name / "documents" / "web").rglob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            kept |= {json.loads(line)["metadata"]["orig_id"] for line in f}
    return kept


def _simhash_reference(corpus: dict[str, list[tuple[str, str, str]]]) -> set[str]:
    """ROOTS' near dedup by brute force: exact normalised text or SimHash distance <= 4 joins
    two documents; the first of each group (files by name, then line) is kept."""
    docs = [(doc_id, text) for lang in sorted(corpus) for doc_id, _, text in corpus[lang]]
    keys = [text_key(t) for _, t in docs]
    fps = [text_simhash(t, 6) for _, t in docs]
    parent = list(range(len(docs)))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i in range(len(docs)):
        for j in range(i + 1, len(docs)):
            if keys[i] == keys[j] or bin(fps[i] ^ fps[j]).count("1") <= 4:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    return {docs[i][0] for i in range(len(docs)) if find(i) == i}


def test_default_keeps_one_document_per_family(planted):
    root, corpus = planted
    kept = _prepare(root, "default", {})
    for lang, rows in corpus.items():
        for doc_id, family, _ in rows:
            if not family:
                assert doc_id in kept, f"{doc_id} is not a duplicate of anything"
        for family in {f for _, f, _ in rows if f}:
            # the first copy stays and its near or exact copy goes
            assert {f"{family}-a", f"{family}-b"} & kept == {f"{family}-a"}, (lang, family)


def test_roots_preset_is_simhash_only(planted):
    root, corpus = planted
    kept = _prepare(root, "roots", {"preset": "roots"})
    assert kept == _simhash_reference(corpus)
    # ROOTS' 64-bit SimHash at distance <= 4 lets near copies through that the default removes
    survivors = {
        f for rows in corpus.values() for i, f, _ in rows if f and i.endswith("-b") and i in kept
    }
    assert survivors and all(
        not f.startswith("fr-") or int(f.split("-")[1]) >= 10 for f in survivors
    )


@pytest.mark.parametrize(
    "option", [{"minhash_ngrams": 8}, {"minhash_hashes_per_bucket": 8}], ids=lambda o: str(o)
)
def test_minhash_shape_options_change_what_is_found(planted, option):
    """Longer shingles (fewer shared on an edited copy) or more rows per band (a higher LSH
    threshold, (1/20)^(1/8) = 0.69) each let some 10 %-edited copies through that the default
    removes; exact copies still go (exact_text)."""
    root, corpus = planted
    name = "-".join(f"{k}{v}" for k, v in option.items())
    kept = _prepare(root, name, option)
    both = {
        f for rows in corpus.values() for i, f, _ in rows if f and i.endswith("-b") and i in kept
    }
    assert both, f"{option}: every near copy was still found"
    assert not any(f.startswith("fr-") and int(f.split("-")[1]) < 10 for f in both)
