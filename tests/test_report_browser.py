"""The run report (`report.html` of `bloomforge run`/`demo`) and `data report`'s page, opened in
headless Chromium: the data card's sections, figures the browser decodes, long source tables
collapsed until clicked, the model card as HTML headings, and no raw JSON, markdown or epoch
float on the page.

The run folder is made here (data/stats.json from the hand-counted ledger of test_report.py
with PII and each-filter-alone counts added, a token manifest with 33 sources, a micro model's
train/config.yaml and metrics) instead of running the pipeline. Dates are checked against
`datetime` directly.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from bloomforge.data.report import write_report as write_data_report
from bloomforge.pipeline.report import write_report
from bloomforge.recipe import load_recipe, save_recipe
from browser import chromium_page
from test_report import hand_stats

STARTED, FINISHED = 1796195040.1120307, 1796195045.8001583
RAW_JSON = re.compile(r'[{\[]\s*"[^"\n]+"\s*:')
EPOCH_FLOAT = re.compile(r"\b1[5-9]\d{8}\.\d+")


def _stats() -> dict:
    stats = hand_stats()
    stats["settings"] |= {"started": STARTED, "finished": FINISHED}
    stats["pii"] = {"s": {"fr": {"EMAIL": 3, "IP": 1}, "en": {"EMAIL": 2}}}
    stats["each_filter_alone"] = {
        "s": {
            "fr": {"_documents": 10, "min_words": 3, "stopwords": 2},
            "en": {"_documents": 5, "min_words": 1},
        }
    }
    return stats


def _run_folder(root):
    run = root / "run"
    for sub in ("data", "tokens", "train", ".stages"):
        (run / sub).mkdir(parents=True)
    (run / "data" / "stats.json").write_text(json.dumps(_stats()))
    sources = {
        f"src{i:02d}": {"fr" if i % 2 else "en": {"tokens": 1000 + i, "documents": i + 1}}
        for i in range(33)
    }
    (run / "tokens" / "manifest.json").write_text(json.dumps({"sources": sources}))
    save_recipe(load_recipe(None, ["model.preset=micro"]), run / "train" / "config.yaml")
    metrics = [
        {"kind": "train", "step": i, "tokens": 512 * i, "loss": 6 - 0.2 * i, "lr": 1e-3}
        for i in range(1, 6)
    ]
    (run / "train" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    record = {"seconds": 2.5, "finished": "2026-12-02T07:00:00+0000", "fingerprint": "ab" * 32}
    for stage in ("data", "tokens", "train"):
        (run / ".stages" / f"{stage}.json").write_text(json.dumps(record | {"max_rss_mb": 300}))
    write_report(run, load_recipe(None, []))
    return run


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _no_raw_dumps(page) -> str:
    text = page.inner_text("body")
    assert not RAW_JSON.search(text), RAW_JSON.search(text)
    assert not EPOCH_FLOAT.search(text), EPOCH_FLOAT.search(text)
    assert page.locator("pre").count() == 0
    assert _utc(STARTED) in text and _utc(FINISHED) in text  # times as dates
    return text


def _figure_decoded(page, selector: str) -> None:
    img = page.locator(f"{selector} img").first
    assert img.evaluate("i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100")


def test_run_report_in_chromium(tmp_path):
    run = _run_folder(tmp_path)
    with chromium_page() as page:
        page.goto((run / "report.html").as_uri())
        text = _no_raw_dumps(page)
        for section in ("data-sources", "data-languages", "data-filters", "data-dedup"):
            assert page.locator(f"#{section}").is_visible(), section
        # the ROOTS per-filter, per-language removal: figure and table (hand counts: fr 3 of 10
        # documents fail min_words alone = 30%, en 1 of 5 = 20%)
        _figure_decoded(page, "#data-filters")
        alone = page.locator("#data-filters table").first.inner_text()
        assert re.search(r"min_words\s+20\.00\s+30\.00", alone), alone
        # dedup and PII per language (hand counts of the ledger and of the pii counters)
        assert re.search(r"fr\s+1\b", page.locator("#data-dedup table").inner_text())
        pii = page.locator("#data-pii table").inner_text()
        assert re.search(r"en\s+2\s+0", pii) and re.search(r"fr\s+3\s+1", pii), pii
        # 33 sources: collapsed until the summary is clicked
        row = page.locator("details td", has_text="src05").first
        assert not row.is_visible()
        page.locator("summary", has_text="tokens per source").click()
        assert row.is_visible()
        # the model card as HTML: its sections are headings, its table a table
        card = page.locator(".model-card")
        headings = card.locator("h3").all_inner_texts()
        assert {"Model Details", "Uses", "Bias, Risks, and Limitations"} <= set(headings)
        assert "Hyper-parameters" in card.locator("h4").all_inner_texts()
        assert card.locator("table td", has_text="AdamW betas, eps").count() == 1
        assert "## " not in text and "**" not in text
        assert page.locator("strong", has_text="Parameters:").count() == 1


def test_data_report_page_in_chromium(tmp_path):
    (tmp_path / "stats.json").write_text(json.dumps(_stats()))
    page_file = write_data_report(tmp_path)
    with chromium_page() as page:
        page.goto(page_file.as_uri())
        _no_raw_dumps(page)
        for section in ("data-summary", "data-sources", "data-filters", "data-dedup", "data-pii"):
            assert page.locator(f"#{section}").is_visible(), section
        _figure_decoded(page, "#data-filters")
        _figure_decoded(page, "#data-languages")
