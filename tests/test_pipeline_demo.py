"""`bloomforge demo --small` end to end on a locale tree built here from Tatoeba sentences (English
msgids, French/German/Spanish translations, a header with a translator's e-mail) and a tiny code
folder: corpus -> data prepare (language id, ROOTS filters, dedup, PII) -> tokenizer -> tokens ->
train -> eval -> export -> report, then a second run that skips every stage."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bloomforge.cli import main
from test_pipeline_corpus import HEADER, write_mo

TATOEBA = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "tatoeba"


def _messages(lang3: str, n: int) -> dict[str, str]:
    src = TATOEBA / f"tatoeba.{lang3}-eng.{lang3}"
    if not src.exists():
        pytest.skip(f"{src} not available")
    eng = (TATOEBA / f"tatoeba.{lang3}-eng.eng").read_text(encoding="utf-8").splitlines()
    own = src.read_text(encoding="utf-8").splitlines()
    return dict(list(zip(eng, own, strict=True))[:n])


def test_demo_small_on_a_built_locale_tree(tmp_path, capsys):
    loc = tmp_path / "locale"
    for locale, lang3 in (("fr", "fra"), ("de", "deu"), ("es_MX", "spa")):
        write_mo(loc / locale / "LC_MESSAGES" / "app.mo", {"": HEADER, **_messages(lang3, 300)})
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "m.py").write_text("def add(a, b):\n    return a + b\n" * 40)
    run = tmp_path / "run"
    argv = [
        "demo",
        "--small",
        "--out",
        str(run),
        f"corpus.locale_dir={loc}",
        f"corpus.code_dir={tmp_path / 'code'}",
        "corpus.min_language_bytes=100",
        "tokenizer.vocab_size=300",
        "train.max_tokens=2048",
        "train.decay_tokens=2048",
        "train.warmup_tokens=256",
        "workers=1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{run}: ran corpus, data, tokenizer, tokens, train, eval, export, report" in out
    stats = json.loads((run / "data" / "stats.json").read_text())
    emails = sum(n.get("EMAIL", 0) for s in stats["pii"].values() for n in s.values())
    assert emails >= 3  # the header of each of the three catalogues
    kept = {lang for langs in stats["final"].values() for lang in langs}
    assert kept == {"fr", "de", "es", "en", "code"}
    assert all(t["adds_up"] for t in stats["totals"].values())
    html = (run / "report.html").read_text()
    for lang in kept:
        assert f"<td>{lang}</td>" in html
    everything = "".join(
        gzip.decompress(p.read_bytes()).decode()
        for folder in ("documents", "excluded", "work")
        for p in (run / "data" / folder).rglob("*.gz")
    )
    assert "marie.curie@example.org" not in everything  # only restricted/pii/ keeps originals
    assert "marie.curie@example.org" in "".join(
        p.read_text() for p in (run / "data" / "restricted").rglob("*") if p.is_file()
    )
    assert main(argv) == 0
    assert f"{run}: ran nothing (all up to date)" in capsys.readouterr().out
