"""Deduplication finds planted duplicates in real text, keeps one of each, and adds up.

References: brute-force pairwise Hamming distances and connected components (SimHash), a
brute-force window scan (exact substrings), a bit-by-bit SimHash, hand-built documents (template
lines, URLs), and the datatrove ledger totals.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from datatrove.executor import LocalPipelineExecutor

from bloomforge.data.dedup import DedupConfig, dedup_jobs, dedup_summary
from bloomforge.data.dedup.near import simhash_representatives
from bloomforge.data.dedup.substrings import (
    brute_force_masks,
    cut_spans,
    later_repeat_masks,
    mask_spans,
)
from bloomforge.data.dedup.text import normalize_url, simhash, text_key, text_simhash, url_key
from bloomforge.data.ledger import IN, KEPT, read_ledger
from bloomforge.errors import BloomforgeError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OFF = dict(exact_text=False, exact_url=False, template_lines=False, simhash=False, minhash=False)


def _sentences(lang: str) -> list[str]:
    path = DATA / "corpus" / f"{lang}.txt"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return [s for s in path.read_text(encoding="utf-8").split("\n") if s.strip()]


def _write(folder: Path, files: list[list[dict]]) -> None:
    folder.mkdir(parents=True)
    for i, docs in enumerate(files):
        with gzip.open(folder / f"{i:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")


def _doc(doc_id: str, text: str, lang: str = "en", url: str | None = None) -> dict:
    meta = {"source": "test", "language": lang, "file": "raw.jsonl", "line": 1}
    if url:
        meta["url"] = url
    return {"text": text, "id": doc_id, "metadata": meta}


def _run(inp: Path, out: Path, config: DedupConfig, tasks: int, workers: int = 1) -> Path:
    root = out.parent
    for stage in dedup_jobs(str(inp), str(out), str(root / "work"), config, tasks):
        logs = root / "logs" / stage.name
        LocalPipelineExecutor(
            stage.pipeline, tasks=stage.tasks, workers=workers, logging_dir=str(logs)
        ).run()
    return root


def _read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _outputs(out: Path) -> dict[str, list[dict]]:
    return {p.name: _read_jsonl(p) for p in sorted(out.glob("*.jsonl.gz"))}


def _ledger(root: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """step -> outcome -> (documents, bytes), summed over sources and languages; checks sums."""
    steps: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in read_ledger(root / "logs"):
        steps[row.step][row.outcome][0] += row.documents
        steps[row.step][row.outcome][1] += row.bytes
    for step, outcomes in steps.items():
        removed = [v for k, v in outcomes.items() if k not in (IN, KEPT)]
        for what in (0, 1):  # in = kept + removed, documents and bytes
            total = outcomes[KEPT][what] + sum(v[what] for v in removed)
            assert outcomes[IN][what] == total, (step, what, dict(outcomes))
    return {s: {k: tuple(v) for k, v in o.items()} for s, o in steps.items()}


def _edit(text: str, rng: random.Random, substitutions: int) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), substitutions):
        words[i] = "zyxwv"
    return " ".join(words)


NEAR = {2: 1, 3: 2, 4: 1, 5: 2, 13: 1, 14: 2}  # document -> words substituted in its copy


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """12 distinct English and 4 French documents (~450-700 words) in 2 files, then a third
    file of planted copies: exact after normalisation, same URL, and near (1-2 words edited)."""
    en, fr = _sentences("en"), _sentences("fr")
    docs = [" \n".join(en[30 * i : 30 * i + 30]) for i in range(12)]
    docs += [" \n".join(fr[30 * i : 30 * i + 30]) for i in range(4)]
    originals = [
        _doc(f"d{i}", t, "fr" if i >= 12 else "en", url=f"https://example.org/{i}")
        for i, t in enumerate(docs)
    ]
    plants = [
        # same text after NFKC/lowercase/whitespace/punctuation/digit normalisation
        _doc("p_exact", docs[0].upper().replace(".", " ;") + " 2024"),
        # another text, same page: www, case of host, trailing slash, fragment
        _doc("p_url", " \n".join(en[600:630]), url="https://www.EXAMPLE.org/1/#top"),
    ]
    for k, words in NEAR.items():
        text = _edit(docs[k], random.Random(k), words)
        plants.append(_doc(f"p_near{k}", text, "fr" if k >= 12 else "en"))
    inp = tmp_path_factory.mktemp("planted") / "in"
    _write(inp, [originals[:8], originals[8:], plants])
    return (
        inp,
        {d["id"] for d in originals},
        {k: (docs[k], p["text"]) for k, p in zip(NEAR, plants[2:], strict=True)},
    )


def test_text_and_url_keys_normalise_as_documented():
    assert text_key("Hello,  World 42!") == text_key("hello world") != text_key("hello word")
    assert text_key("Ｈｅｌｌｏ") == text_key("hello")  # NFKC folds full-width letters
    assert text_key("123 !!") == 0  # nothing left: not compared
    assert (
        normalize_url("HTTPS://www.Example.org:443/a/b/?q=1#frag") == "https://example.org/a/b?q=1"
    )
    assert url_key("http://example.org/a") != url_key("https://example.org/a")
    assert url_key(None) == url_key("") == 0


def test_simhash_matches_bitwise_reference():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 100):
        hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
        expected = 0
        for bit in range(64):
            ones = sum((int(h) >> bit) & 1 for h in hashes)
            if 2 * ones > n:
                expected |= 1 << bit
        assert simhash(hashes) == expected


def test_simhash_blocks_find_every_pair_within_distance():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2**64, size=150, dtype=np.uint64)
    fps = [int(x) for x in base]
    for i in range(120):  # planted neighbours at 0..7 flipped bits, some chained
        flipped = int(fps[i % 40])
        for bit in rng.choice(64, size=i % 8, replace=False):
            flipped ^= 1 << int(bit)
        fps.append(flipped)
    rng.shuffle(fps)
    n = len(fps)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i in range(n):
        for j in range(i + 1, n):
            if bin(fps[i] ^ fps[j]).count("1") <= 4:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
    expected = [find(i) for i in range(n)]  # the root is the smallest index of the component
    got = simhash_representatives(np.array(fps, dtype=np.uint64), max_distance=4, blocks=6)
    assert got.tolist() == expected
    assert sum(e != i for i, e in enumerate(expected)) > 40  # the test plants real clusters


def test_substrings_match_brute_force_on_real_text():
    lines = _sentences("fr")[:400]
    rng = random.Random(3)
    docs = [" ".join(rng.sample(lines, 4)).encode() for _ in range(50)]
    for min_len in (50, 20):
        got = later_repeat_masks(docs, min_len)
        want = brute_force_masks(docs, min_len)
        assert all((g == w).all() for g, w in zip(got, want, strict=True))
    assert sum(m.sum() for m in got) > 1000  # sentences were reused: there is something to find
    # the first occurrence stays, the later one goes, and what is left is valid UTF-8
    text = "Le début d'une phrase répétée — assez longue pour dépasser cinquante octets."
    first, second = text.encode(), ("avant " + text + " après").encode()
    masks = later_repeat_masks([first, second], 50)
    assert not masks[0].any() and masks[1].sum() == len(text.encode())
    assert cut_spans(second, mask_spans(masks[1])).decode() == "avant  après"
    # a span ending inside a character is shrunk to whole characters
    assert cut_spans("aé".encode(), [(0, 2)]).decode() == "é"


def test_template_lines_need_ten_copies_and_fifteen_chars(tmp_path):
    en = _sentences("en")
    long_line, rare_line, short_line = (
        "Share this page on Twitter",
        "Subscribe to our letter",
        "Cookie policy",
    )
    assert len(short_line) < 15 <= min(len(long_line), len(rare_line))
    docs = []
    for i in range(12):
        lines = [en[i], long_line if i < 10 else en[100 + i], short_line]
        lines += [rare_line] if i < 9 else []
        docs.append(_doc(f"t{i}", "\n".join(lines)))
    docs.append(_doc("only_template", long_line))  # the 11th copy, nothing else
    _write(tmp_path / "in", [docs])
    config = DedupConfig(**(OFF | {"template_lines": True}))
    root = _run(tmp_path / "in", tmp_path / "out", config, tasks=1)
    out = {d["id"]: d["text"] for d in _outputs(tmp_path / "out")["00000.jsonl.gz"]}
    assert "only_template" not in out and len(out) == 12
    for i in range(12):
        assert long_line not in out[f"t{i}"].split("\n")
        assert short_line in out[f"t{i}"] and (rare_line in out[f"t{i}"]) == (i < 9)
    ledger = _ledger(root)["dedup_template_lines"]
    assert ledger["template_lines_empty"] == (1, len(long_line))
    assert ledger["template_lines"] == (0, 10 * (len(long_line) + 1))  # the line and its "\n"
    assert dedup_summary(str(root / "work"))["template_lines_removed"]["pieces"] == {"en": 11}


def test_planted_duplicates_found_once_each_and_tasks_do_not_matter(planted, tmp_path):
    inp, original_ids, near = planted
    # SimHash at Hamming <= 4 catches some 1-2 word edits of a long document, not all (bits
    # whose shingle counts sit near the majority flip): expect exactly the copies whose
    # fingerprints are within 4 bits, counted here bit by bit
    within = {
        f"p_near{k}"
        for k, (a, b) in near.items()
        if bin(text_simhash(a, 6) ^ text_simhash(b, 6)).count("1") <= 4
    }
    assert len(within) >= 3
    # ROOTS' near dedup (SimHash only): the default's MinHash would find every near copy
    config = DedupConfig(preset="roots", substrings=True)
    outputs = {}
    for tasks in (1, 2):
        # tasks=2 in 2 processes: the steps travel pickled
        root = _run(inp, tmp_path / f"t{tasks}" / "out", config, tasks, workers=tasks)
        outputs[tasks] = _outputs(tmp_path / f"t{tasks}" / "out")
        ledger = _ledger(root)
    assert outputs[1] == outputs[2]
    kept = {d["id"] for docs in outputs[1].values() for d in docs}
    # every distinct document kept (the first of each group), the planted copies gone
    assert kept == original_ids | {f"p_near{k}" for k in NEAR} - within
    assert ledger["dedup_exact"]["exact_text"][0] == 1
    assert ledger["dedup_exact"]["exact_url"][0] == 1
    assert ledger["dedup_simhash"]["simhash"][0] == len(within)
    doc = next(d for d in outputs[1]["00000.jsonl.gz"] if d["id"] == "d1")
    assert doc["metadata"] == {
        "source": "test", "language": "en", "file": "raw.jsonl", "line": 1,
        "url": "https://example.org/1",
    }  # fmt: skip
    summary = dedup_summary(str(root / "work"))
    # the exact copy is also SimHash's (same words): found by both, removed as exact_text
    assert sum(summary["duplicates"]["simhash"].values()) == len(within) + 1


def test_minhash_stages_find_the_planted_near_duplicates(planted, tmp_path):
    inp, original_ids, _ = planted
    config = DedupConfig(**(OFF | {"minhash": True}))
    _run(inp, tmp_path / "t1" / "out", config, tasks=1)
    root = _run(inp, tmp_path / "t2" / "out", config, tasks=2)
    assert _outputs(tmp_path / "t1" / "out") == _outputs(tmp_path / "t2" / "out")
    kept = {d["id"] for docs in _outputs(tmp_path / "t2" / "out").values() for d in docs}
    # every near copy; datatrove lowercases and drops punctuation: the exact copy too
    assert kept == original_ids | {"p_url"}
    assert _ledger(root)["dedup_minhash"]["minhash"][0] == len(NEAR) + 1


def test_every_method_off_copies_input(planted, tmp_path):
    inp, _, _ = planted
    config = DedupConfig(**OFF)
    stages = dedup_jobs(str(inp), str(tmp_path / "out"), str(tmp_path / "work"), config, 2)
    assert [s.name for s in stages] == ["dedup_filter"]
    _run(inp, tmp_path / "out", config, tasks=2)
    for path in sorted(inp.glob("*.jsonl.gz")):
        assert _outputs(tmp_path / "out")[path.name] == _read_jsonl(path)


def test_config_rejects_a_search_that_cannot_work():
    with pytest.raises(BloomforgeError, match="simhash_max_distance"):
        # no exact block pair left
        DedupConfig(preset="roots", simhash_max_distance=6, simhash_blocks=6)
    with pytest.raises(BloomforgeError, match="template_min_count"):
        DedupConfig(template_min_count=0)


def test_minhash_candidates_are_checked_against_whole_signatures(tmp_path):
    """Documents of 8 sentences of their own and 4 of a shared pool of 8 (boilerplate) share
    3-grams: Jaccard up to about 0.27 (brute force below), and one equal band of 20 x 3 joins a
    third of such pairs. Checked against the whole signatures (the default, 0.4) only the planted
    one-word copies go; unchecked (`minhash_min_similarity: 0`, datatrove's clustering)
    documents that are not copies go too."""
    lines = _sentences("fr")
    pool = lines[:8]
    docs = []
    for i in range(60):
        own = lines[8 + 8 * i : 16 + 8 * i]
        docs.append(" ".join(own[:4] + [pool[(i + 2 * k) % 8] for k in range(4)] + own[4:]))
    copies = {i: _edit(docs[i], random.Random(i), 1) for i in range(5)}
    rows = [_doc(f"d{i}", t, "fr") for i, t in enumerate(docs)]
    rows += [_doc(f"c{i}", t, "fr") for i, t in copies.items()]
    _write(tmp_path / "in", [rows])

    def grams(text: str) -> set[str]:
        words = text.lower().split()
        return {" ".join(words[i : i + 3]) for i in range(len(words) - 2)}

    sets = [grams(d) for d in docs]
    jaccard = [len(a & b) / len(a | b) for i, a in enumerate(sets) for b in sets[i + 1 :]]
    assert 0.2 < max(jaccard) < 0.3  # the reference: related by boilerplate, not copies
    removed = {}
    for name, cut in (("checked", 0.4), ("unchecked", 0.0)):
        config = DedupConfig(**(OFF | {"minhash": True, "minhash_min_similarity": cut}))
        _run(tmp_path / "in", tmp_path / name / "out", config, tasks=1)
        kept = {d["id"] for docs in _outputs(tmp_path / name / "out").values() for d in docs}
        removed[name] = {d["id"] for d in rows} - kept
    assert removed["checked"] == {f"c{i}" for i in copies}
    assert removed["unchecked"] > removed["checked"]
