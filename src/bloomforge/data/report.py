"""`data report`: a prepared folder's stats.json -> report.html, PNG figures and a data card.

In: PREPARED/stats.json (written by `data prepare`). Out: PREPARED/report.html (self-contained:
the PNGs are embedded as base64, so it opens offline and can be mailed), and PREPARED/report/
with the same PNGs, a copy of stats.json and DATA_CARD.md (`data_card_markdown`, also used by
the end-to-end run report). Figures, drawn with matplotlib's Agg canvas:
- the ROOTS paper's table and figure: % of documents and bytes removed per language;
- % of the documents reaching each filter that it discarded, per language (the ledger's per-step
  numbers: filters run in sequence, so a filter's share is of what the earlier ones kept);
- byte and document shares of the final corpus per language and per source;
- dedup removal rates per language (when dedup ran) and PII spans per type and language.
Tokens per language need a tokenizer, which comes later in the pipeline: bytes stand in here.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Any

from bloomforge.atomic import atomic_directory
from bloomforge.data.prepare.stats import (
    alone_table,
    language_table,
    step_table,
    write_json_atomic,
)
from bloomforge.errors import BloomforgeError

FIGURE_LANGUAGES = 20


def load_stats(prepared: str | Path) -> dict:
    path = Path(prepared) / "stats.json"
    if not path.exists():
        raise BloomforgeError(
            f"{path}: no such file (run `bloomforge data prepare` first; a run that has not "
            "finished has no stats.json)"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BloomforgeError(f"{path}: not valid JSON ({e})") from None


def _bars(
    ax: Any, labels: list[str], series: dict[str, list[float]], ylabel: str, legend: bool = False
) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 8 else 0)
    ax.set_ylabel(ylabel)
    if legend or len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _top_languages(stats: dict, n: int = FIGURE_LANGUAGES) -> set[str]:
    """The n languages with the most documents entering any step (per-step figures show these;
    language id on web text finds dozens of languages with a document or two each)."""
    docs: dict[str, int] = {}
    for row in stats.get("ledger", []):
        if row.get("outcome") == "in":
            lang = row["language"]
            docs[lang] = max(docs.get(lang, 0), int(row["documents"]))
    return set(sorted(docs, key=lambda lang: (-docs[lang], lang))[:n])


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    return name


def _figures(stats: dict, folder: Path) -> list[tuple[str, str]]:
    """Draw every figure that has data; returns (title, file name) pairs."""
    from matplotlib.figure import Figure  # Agg canvas: no display, no global pyplot state

    out: list[tuple[str, str]] = []
    table = language_table(stats)
    if table:
        langs = [r["language"] for r in table]
        fig = Figure(figsize=(max(5, 0.6 * len(langs) + 2), 3.6))
        ax = fig.subplots()
        _bars(
            ax,
            langs,
            {
                "documents": [r["removed_documents_pct"] for r in table],
                "bytes": [r["removed_bytes_pct"] for r in table],
            },
            "% removed",
        )
        ax.set_title("Removed by filtering and deduplication, per language", fontsize=11)
        out.append(("Removed per language", _save(fig, folder, "removed_by_language.png")))

    top = _top_languages(stats)
    alone = alone_table(stats)
    if alone:
        langs = sorted({lang for v in alone.values() for lang in v} & top)
        fig = Figure(figsize=(max(6, 0.5 * len(langs) * len(alone) ** 0.5 + 3), 4))
        ax = fig.subplots()
        series = {f: [v.get(lang, 0.0) for lang in langs] for f, v in sorted(alone.items())}
        _bars(ax, langs, series, "% of documents", legend=True)
        title = "Discarded by each filter alone, per language (ROOTS figure)"
        ax.set_title(title, fontsize=11)
        out.append((title, _save(fig, folder, "discarded_by_filter_alone.png")))

    for group, title, name in (
        ("filter", "Discarded by each filter in turn, per language", "discarded_by_filter.png"),
        ("dedup", "Removed by deduplication, per language", "dedup_rates.png"),
    ):
        # Steps that removed something (PII redaction and language id never remove).
        steps = {s: v for s, v in step_table(stats, group).items() if any(v.values())}
        if not steps:
            continue
        langs = sorted({lang for v in steps.values() for lang in v} & top)
        fig = Figure(figsize=(max(6, 0.5 * len(langs) * len(steps) ** 0.5 + 3), 4))
        ax = fig.subplots()
        series = {s: [v.get(lang, 0.0) for lang in langs] for s, v in steps.items()}
        _bars(ax, langs, series, "% of documents reaching the step", legend=True)
        ax.set_title(title, fontsize=11)
        out.append((title, _save(fig, folder, name)))

    final = stats.get("final", {})
    if final:
        by_lang: dict[str, list[int]] = {}
        for langs_ in final.values():
            for lang, c in langs_.items():
                cell = by_lang.setdefault(lang, [0, 0])
                cell[0] += c["documents"]
                cell[1] += c["bytes"]
        by_source = {
            s: [sum(c["documents"] for c in v.values()), sum(c["bytes"] for c in v.values())]
            for s, v in final.items()
        }
        fig = Figure(figsize=(9, max(3, 0.3 * max(len(by_lang), len(by_source)) + 2)))
        axes = fig.subplots(1, 2)
        for ax, (what, groups) in zip(
            axes, (("language", by_lang), ("source", by_source)), strict=True
        ):
            names = sorted(groups, key=lambda k: groups[k][1])
            docs = sum(v[0] for v in groups.values()) or 1
            size = sum(v[1] for v in groups.values()) or 1
            ys = range(len(names))
            ax.barh(
                [y + 0.2 for y in ys],
                [100 * groups[n][1] / size for n in names],
                0.4,
                label="bytes",
            )
            ax.barh(
                [y - 0.2 for y in ys],
                [100 * groups[n][0] / docs for n in names],
                0.4,
                label="documents",
            )
            ax.set_yticks(list(ys), names)
            ax.set_xlabel("% of the final corpus")
            ax.set_title(f"Share per {what}")
            ax.legend(fontsize=8)
        out.append(("Shares of the final corpus", _save(fig, folder, "shares.png")))

    pii = _pii_by_language(stats)
    if pii:
        langs = sorted(pii)
        types = sorted({t for v in pii.values() for t in v})
        fig = Figure(figsize=(max(5, 0.6 * len(langs) + 2), 3.6))
        ax = fig.subplots()
        _bars(ax, langs, {t: [pii[lang].get(t, 0) for lang in langs] for t in types}, "spans")
        ax.set_title("PII spans redacted, per language and type")
        out.append(("PII redacted", _save(fig, folder, "pii.png")))
    return out


def _pii_by_language(stats: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for langs in stats.get("pii", {}).values():
        for lang, types in langs.items():
            for kind, n in types.items():
                out.setdefault(lang, {})[kind] = out.get(lang, {}).get(kind, 0) + n
    return out


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _language_rows(stats: dict) -> list[list[Any]]:
    return [
        [
            r["language"],
            r["documents"],
            r["kept_documents"],
            r["removed_documents_pct"],
            r["bytes"],
            r["kept_bytes"],
            r["removed_bytes_pct"],
        ]
        for r in language_table(stats)
    ]


_LANG_HEADER = ["language", "documents", "kept", "% removed", "bytes", "kept bytes", "% removed"]


def _source_rows(stats: dict) -> list[list[Any]]:
    rows = []
    for name, meta in stats["sources"].items():
        t = stats["totals"].get(name, {"read": 0, "final": 0})
        skipped = sum(stats["reader"].get(name, {}).get("skipped", {}).values())
        rows.append([name, meta["language"], t["read"], skipped, t["final"]])
    return rows


_SOURCE_HEADER = ["source", "language", "documents read", "malformed records", "documents kept"]


def data_card_markdown(stats: dict) -> str:
    """A DATA_CARD.md-style summary of a prepared corpus (markdown text)."""
    final_docs = sum(t["final"] for t in stats["totals"].values())
    final_bytes = sum(c["bytes"] for v in stats.get("final", {}).values() for c in v.values())
    parts = [
        "# Data card",
        "",
        f"Prepared with `bloomforge data prepare` ({stats['settings'].get('executor', 'local')} "
        f"executor): {final_docs:,} documents, {final_bytes / 1e6:,.2f} MB of UTF-8 text after "
        "filtering, deduplication and PII redaction. Sources were kept separate (ROOTS).",
        "",
        "## Sources",
        _markdown_table(_SOURCE_HEADER, _source_rows(stats)),
        "",
        "## Languages (removal rates, as in the ROOTS paper's table)",
        _markdown_table(_LANG_HEADER, _language_rows(stats)),
        "",
        "## Processing",
    ]
    steps = [s for names in stats["steps"].values() for s in names]
    parts.append("Steps run: " + ", ".join(dict.fromkeys(steps)) + ".")
    off = stats.get("filters_off", [])
    if off:
        parts += ["", "Not applied:"]
        parts += [f"- {o['source']}: {o['filter']} ({o['why']})" for o in off]
    pii = _pii_by_language(stats)
    if pii:
        counts = {}
        for types in pii.values():
            for kind, n in types.items():
                counts[kind] = counts.get(kind, 0) + n
        listed = ", ".join(f"{n:,} {k}" for k, n in sorted(counts.items()))
        parts += ["", f"PII redacted (BigScience regexes, replaced by `PI:<TYPE>`): {listed}."]
    parts += [
        "",
        "## Restricted material",
        "The originals of redacted PII are only in `restricted/pii/`; `work/`, `excluded/` and "
        "`malformed/` hold text before redaction. Share `documents/` only.",
        "",
    ]
    return "\n".join(parts)


_CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}"
)


def render_html(stats: dict, figures: list[tuple[str, Path]]) -> str:
    body = ["<h1>Prepared corpus report</h1>"]
    body += ["<h2>Sources</h2>", _table(_SOURCE_HEADER, _source_rows(stats))]
    body += ["<h2>Removed per language</h2>", _table(_LANG_HEADER, _language_rows(stats))]
    steps = step_table(stats)
    if steps:
        langs = sorted({lang for v in steps.values() for lang in v})
        rows = [[s, *[v.get(lang, "") for lang in langs]] for s, v in steps.items()]
        body += ["<h2>% discarded by each step (of the documents reaching it)</h2>"]
        body.append(_table(["step", *langs], rows))
    skipped = [
        [s, reason, n] for s, r in stats["reader"].items() for reason, n in r["skipped"].items()
    ]
    if skipped:
        body += ["<h2>Malformed records set aside (malformed/)</h2>"]
        body.append(_table(["source", "reason", "records"], skipped))
    pii = _pii_by_language(stats)
    if pii:
        rows = [[lang, kind, n] for lang, types in sorted(pii.items()) for kind, n in types.items()]
        body += ["<h2>PII redacted</h2>", _table(["language", "type", "spans"], rows)]
    off = stats.get("filters_off", [])
    body.append("<h2>Filters and steps not applied</h2>")
    if off:
        body.append(
            _table(["source", "step", "why"], [[o["source"], o["filter"], o["why"]] for o in off])
        )
    else:
        body.append("<p>Every step ran for every source.</p>")
    if "dedup_summary" in stats:
        summary = html.escape(json.dumps(stats["dedup_summary"], indent=1))
        body += ["<h2>Deduplication</h2>", f"<pre>{summary}</pre>"]
    for title, path in figures:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body += [
            f"<h2>{html.escape(title)}</h2>",
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">',
        ]
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>bloomforge data report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(prepared: str | Path) -> Path:
    """Write PREPARED/report.html and PREPARED/report/ (PNGs, stats.json, DATA_CARD.md)."""
    prepared = Path(prepared)
    stats = load_stats(prepared)
    folder = prepared / "report"
    with atomic_directory(folder) as tmp:
        names = _figures(stats, tmp)
        shutil.copyfile(prepared / "stats.json", tmp / "stats.json")
        (tmp / "DATA_CARD.md").write_text(data_card_markdown(stats), encoding="utf-8")
    page = render_html(stats, [(title, folder / name) for title, name in names])
    target = prepared / "report.html"
    tmp_page = target.with_name(".report.html.tmp")
    tmp_page.write_text(page, encoding="utf-8")
    tmp_page.replace(target)
    return target


__all__ = ["data_card_markdown", "load_stats", "write_json_atomic", "write_report"]
