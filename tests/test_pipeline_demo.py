"""`bloomforge demo --small` end to end on a locale tree built here, with a stand-in for issue
6's `bloomforge.data.prepare` that follows CONTRACT6's call (`PrepareConfig`, `prepare(config,
out, workers)` -> OUT/documents + OUT/stats.json). It checks the wiring: the gathered corpus
becomes the data stage's sources, its stats reach the report, the embedded recipe parses and
runs. The lead replaces the stand-in with the real prepare after merging issue 6."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

from bloomforge.cli import main
from bloomforge.data.inputs import ReadStats, parse_inputs, read_documents
from test_pipeline_corpus import HEADER, write_mo

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@dataclasses.dataclass
class PrepareConfig:
    sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def prepare(config: PrepareConfig, out: str, workers: int = 1, executor: str = "local") -> dict:
    """Stand-in: copy every source's records to OUT/documents, redacting e-mails, count them."""
    out_dir = Path(out) / "documents"
    out_dir.mkdir(parents=True)
    rows: dict[tuple[str, str], int] = {}
    emails = 0
    with gzip.open(out_dir / "00000.jsonl.gz", "wt", encoding="utf-8") as f:
        for src in config.sources:
            for doc in read_documents(parse_inputs(src["paths"]), ReadStats()):
                text, n = EMAIL.subn("PI:EMAIL", doc.text)
                emails += n
                rows[(src["name"], doc.language)] = rows.get((src["name"], doc.language), 0) + 1
                meta = {"source": src["name"], "language": doc.language}
                f.write(json.dumps({"text": text, "id": doc.id, "metadata": meta}) + "\n")
    stats = {
        "ledger": [
            {"source": s, "language": lang, "in": n, "kept": n} for (s, lang), n in rows.items()
        ],
        "pii": {"EMAIL": emails},
    }
    (Path(out) / "stats.json").write_text(json.dumps(stats))
    return stats


def test_demo_small_on_a_built_locale_tree(tmp_path, monkeypatch, capsys):
    module = types.ModuleType("bloomforge.data.prepare")
    module.PrepareConfig, module.prepare = PrepareConfig, prepare
    monkeypatch.setitem(sys.modules, "bloomforge.data.prepare", module)
    loc = tmp_path / "locale"
    for locale, word in (("fr", "fichier"), ("de", "Datei"), ("es_MX", "archivo")):
        msgs = {f"Message {i}": f"{word} {i} " + word * 8 for i in range(120)}
        write_mo(loc / locale / "LC_MESSAGES" / "app.mo", {"": HEADER, **msgs})
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
    assert stats["pii"]["EMAIL"] >= 3  # the header of each of the three catalogues
    kept = {r["language"] for r in stats["ledger"]}
    assert kept == {"fr", "de", "es", "en", "code"}
    html = (run / "report.html").read_text()
    for lang in kept:
        assert f"<td>{lang}</td>" in html
    assert "<h4>pii</h4>" in html and "<td>EMAIL</td>" in html
    with gzip.open(run / "data" / "documents" / "00000.jsonl.gz", "rt") as f:
        docs = f.read()
    assert "PI:EMAIL" in docs and "marie.curie@example.org" not in docs
    assert main(argv) == 0
    assert f"{run}: ran nothing (all up to date)" in capsys.readouterr().out
