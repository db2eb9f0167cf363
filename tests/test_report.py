"""`data report`: the ROOTS table and per-filter rates from a hand-written ledger, the HTML/PNG
report and data card of a real prepared folder, and the run report's DATA_CARD.md made by the
same data card code (no JSON dump, dates, dedup/PII per language)."""

from __future__ import annotations

import base64
import json

import pytest

from bloomforge.data.prepare import config_from_inputs, prepare
from bloomforge.data.prepare.stats import language_table, step_table
from bloomforge.data.report import data_card_markdown, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _row(stage, step, lang, outcome, docs, size):
    return {
        "stage": stage,
        "step": step,
        "source": "s",
        "language": lang,
        "outcome": outcome,
        "documents": docs,
        "bytes": size,
    }


def hand_stats() -> dict:
    f, d, o = "filter/s", "dedup/s/exact", "final/s"
    ledger = [
        _row(f, "read", "fr", "in", 10, 800),
        _row(f, "read", "fr", "kept", 10, 800),
        _row(f, "min_words", "fr", "in", 10, 800),
        _row(f, "min_words", "fr", "kept", 7, 700),
        _row(f, "min_words", "fr", "too_few_words", 3, 100),
        _row(d, "exact", "fr", "in", 7, 700),
        _row(d, "exact", "fr", "kept", 6, 600),
        _row(d, "exact", "fr", "duplicate", 1, 100),
        _row(o, "output", "fr", "in", 6, 600),
        _row(o, "output", "fr", "kept", 6, 600),
        _row(f, "read", "en", "in", 5, 450),
        _row(f, "read", "en", "kept", 5, 450),
        _row(f, "min_words", "en", "in", 5, 450),
        _row(f, "min_words", "en", "kept", 4, 400),
        _row(f, "min_words", "en", "too_few_words", 1, 50),
        _row(d, "exact", "en", "in", 4, 400),
        _row(d, "exact", "en", "kept", 4, 400),
        _row(o, "output", "en", "in", 4, 400),
        _row(o, "output", "en", "kept", 4, 400),
    ]
    return {
        "settings": {"executor": "local", "workers": 1},
        "sources": {
            "s": {
                "language": "auto",
                "format": "auto",
                "filters": True,
                "dedup": True,
                "pii": False,
                "tasks": 1,
            }
        },
        "stages": [
            {"name": f, "group": "filter", "source": "s", "tasks": 1},
            {"name": d, "group": "dedup", "source": "s", "tasks": 1},
            {"name": o, "group": "final", "source": "s", "tasks": 1},
        ],
        "steps": {f: ["read", "min_words"], d: ["exact"], o: ["output"]},
        "ledger": ledger,
        "reader": {"s": {"records": 15, "documents": 15, "bytes": 1250, "skipped": {}}},
        "totals": {
            "s": {
                "read": 15,
                "final": 10,
                "removed": {"min_words": {"too_few_words": 4}, "exact": {"duplicate": 1}},
                "adds_up": True,
            }
        },
        "final": {
            "s": {"fr": {"documents": 6, "bytes": 600}, "en": {"documents": 4, "bytes": 400}}
        },
        "pii": {},
        "filters_off": [{"source": "s", "filter": "perplexity", "why": "no KenLM model given"}],
    }


def test_language_table_is_roots_table():
    rows = {r["language"]: r for r in language_table(hand_stats())}
    # fr: 6 kept + 3 + 1 removed = 10 documents, 4 removed = 40%; bytes 600 + 100 + 100
    assert rows["fr"]["documents"] == 10 and rows["fr"]["removed_documents_pct"] == 40.0
    assert rows["fr"]["bytes"] == 800 and rows["fr"]["removed_bytes_pct"] == 25.0
    assert rows["en"]["removed_documents_pct"] == 20.0
    assert rows["en"]["removed_bytes_pct"] == pytest.approx(100 * 50 / 450)


def test_step_table_rates_of_documents_reaching_each_step():
    assert step_table(hand_stats(), "filter") == {"min_words": {"en": 20.0, "fr": 30.0}}
    dedup = step_table(hand_stats(), "dedup")
    assert dedup == {"exact": {"en": 0.0, "fr": pytest.approx(100 / 7)}}


def test_report_files_from_hand_stats(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps(hand_stats()))
    page = write_report(tmp_path).read_text()
    pngs = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert pngs == [
        "dedup_rates.png",
        "discarded_by_filter.png",
        "removed_by_language.png",
        "shares.png",
    ]
    assert all((tmp_path / "report" / p).read_bytes().startswith(PNG) for p in pngs)
    embedded = page.split('src="data:image/png;base64,')[1:]
    assert len(embedded) == len(pngs)
    assert base64.b64decode(embedded[0].split('"')[0]).startswith(PNG)
    for text in ("<td>fr</td>", "<td>en</td>", "min_words", "no KenLM model given"):
        assert text in page
    card = (tmp_path / "report" / "DATA_CARD.md").read_text()
    assert "| fr | 10 | 6 | 40.00 | 800 | 600 | 25.00 |" in card
    assert card == data_card_markdown(hand_stats())
    assert json.loads((tmp_path / "report" / "stats.json").read_text()) == hand_stats()


def test_report_of_a_prepared_folder_names_each_language(tmp_path):
    (tmp_path / "fr.txt").write_text("Bonjour tout le monde\nmail: a@b.org\n")
    (tmp_path / "vi.txt").write_text("Xin chào thế giới\n")
    config = config_from_inputs([f"fr={tmp_path}/fr.txt", f"vi={tmp_path}/vi.txt"], False, False)
    prepare(config, tmp_path / "out")
    page = write_report(tmp_path / "out").read_text()
    assert "<td>fr</td>" in page and "<td>vi</td>" in page
    assert {p.name for p in (tmp_path / "out" / "report").glob("*.png")} == {
        "removed_by_language.png",
        "shares.png",
        "pii.png",
    }
    assert "filters: false" in page  # the steps that were off, and why


def test_one_data_card_for_data_report_and_run_report():
    from bloomforge.pipeline.cards import RunFacts, data_card

    stats = hand_stats() | {"pii": {"s": {"fr": {"EMAIL": 2}}}}
    stats["settings"] = {"executor": "local", "workers": 1, "started": 0.5, "finished": 90.0}
    card = data_card(RunFacts(title="t", data_stats=stats))
    assert data_card_markdown(stats, title=None, level=3) in card  # the same card, one level down
    assert "```" not in card and '"ledger"' not in card and "90.0" not in card  # no JSON dump
    assert "| started | 1970-01-01 00:00:00 UTC |" in card  # Unix time 0.5 s
    assert "| took (s) | 89.50 |" in card
    assert "| fr | 10 | 6 | 40.00 | 800 | 600 | 25.00 |" in card  # ROOTS table (hand counts)
    assert "| fr | 1 |" in card.split("### Deduplication")[1]  # the exact duplicate of fr
    assert "| fr | 2 |" in card.split("### PII redacted")[1]
    assert "| min_words | 20.00 | 30.00 |" in card  # per filter, per language (en, fr)


def test_number_formatter():
    from bloomforge.tables import fmt, md_table

    assert [fmt(x) for x in (1234567, 40.0, 0.00123, None, True, "a")] == [
        "1,234,567",
        "40.00",
        "0.00123",
        "",
        "yes",
        "a",
    ]
    assert md_table(["a"], [["x|y"]]).splitlines()[-1] == "| x\\|y |"
