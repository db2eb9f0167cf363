"""`data report`: a prepared folder's stats.json -> report.html, PNG figures and a data card.

In: PREPARED/stats.json (written by `data prepare`). Out: PREPARED/report.html (self-contained:
the PNGs are embedded as base64, so it opens offline and can be mailed), and PREPARED/report/
with the same PNGs, a copy of stats.json and DATA_CARD.md.

The data card is one list of sections (`card_sections`: summary with dates, sources, languages,
per-filter removal per language, dedup and PII per language, malformed records, steps not
applied) rendered as markdown (`data_card_markdown`) or HTML (`data_card_html`, long tables in
`<details>`); `bloomforge run`'s report.html and DATA_CARD.md use the same two functions. Tables
and numbers go through `bloomforge.tables`. Figures, drawn with matplotlib's Agg canvas:
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
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.data.pii import PIIRedactor
from bloomforge.data.prepare.stats import (
    alone_table,
    language_table,
    step_table,
)
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.tables import details, html_table, md_table, when

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


FIGURE_TITLES = {  # title -> file name, in page order
    "Removed per language": "removed_by_language.png",
    "Discarded by each filter alone, per language (ROOTS figure)": "discarded_by_filter_alone.png",
    "Discarded by each filter in turn, per language": "discarded_by_filter.png",
    "Removed by deduplication, per language": "dedup_rates.png",
    "Shares of the final corpus": "shares.png",
    "PII redacted": "pii.png",
}


def _save(fig: Any, out: dict[str, bytes], name: str) -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    out[name] = buf.getvalue()


def figures(stats: dict) -> dict[str, bytes]:
    """Draw every figure that has data: {file name: PNG bytes} (names in FIGURE_TITLES)."""
    from matplotlib.figure import Figure  # Agg canvas: no display, no global pyplot state

    out: dict[str, bytes] = {}
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
        _save(fig, out, "removed_by_language.png")

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
        _save(fig, out, "discarded_by_filter_alone.png")

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
        _save(fig, out, name)

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
        _save(fig, out, "shares.png")

    pii = _pii_by_language(stats)
    if pii:
        langs = sorted(pii)
        types = sorted({t for v in pii.values() for t in v})
        fig = Figure(figsize=(max(5, 0.6 * len(langs) + 2), 3.6))
        ax = fig.subplots()
        _bars(ax, langs, {t: [pii[lang].get(t, 0) for lang in langs] for t in types}, "spans")
        ax.set_title("PII spans redacted, per language and type")
        _save(fig, out, "pii.png")
    return out


def _pii_by_language(stats: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for langs in stats.get("pii", {}).values():
        for lang, types in langs.items():
            for kind, n in types.items():
                out.setdefault(lang, {})[kind] = out.get(lang, {}).get(kind, 0) + n
    return out


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


def _matrix(
    per_row: dict[str, dict[str, Any]], first: str, missing: Any = None
) -> tuple[list[str], list[list[Any]]]:
    """{row: {column: value}} -> a header and rows (columns sorted, missing cells `missing`)."""
    columns = sorted({c for v in per_row.values() for c in v})
    rows = [[r, *(v.get(c, missing) for c in columns)] for r, v in per_row.items()]
    return [first, *columns], rows


def _dedup_by_language(stats: dict) -> dict[str, dict[str, int]]:
    """{language: {reason: documents removed by the dedup steps}} from the ledger."""
    groups = {s["name"]: s["group"] for s in stats.get("stages", [])}
    out: dict[str, dict[str, int]] = {}
    for r in stats.get("ledger", []):
        if groups.get(r["stage"]) != "dedup" or r["outcome"] in ("in", "kept"):
            continue
        if r["documents"]:
            cell = out.setdefault(r["language"], {})
            cell[r["outcome"]] = cell.get(r["outcome"], 0) + r["documents"]
    return dict(sorted(out.items()))


def _settings_rows(stats: dict) -> list[list[Any]]:
    s = stats.get("settings", {})
    rows: list[list[Any]] = [
        ["executor", s.get("executor", "local")],
        ["workers", s.get("workers")],
    ]
    if s.get("started") is not None:
        rows.append(["started", when(s["started"])])
    if s.get("finished") is not None:
        rows.append(["finished", when(s["finished"])])
        if s.get("started") is not None:
            rows.append(["took (s)", round(float(s["finished"]) - float(s["started"]), 1)])
    return rows


def _steps_run(stats: dict) -> list[str]:
    return list(dict.fromkeys(s for names in stats["steps"].values() for s in names))


@dataclass
class _Section:
    """One part of the data card: a title, a note, tables (header, rows) and a figure name."""

    key: str
    title: str
    note: str = ""
    tables: list[tuple[list[str], list[list[Any]]]] = field(default_factory=list)
    figure: str | None = None  # a file name of `figures()`
    collapse: bool = False  # long per-source tables


def card_sections(stats: dict) -> list[_Section]:
    """The data card of a prepared corpus, in order; `data_card_markdown` and `data_card_html`
    (used by `data report` and the run report) both render these."""
    final_docs = sum(t["final"] for t in stats["totals"].values())
    final_bytes = sum(c["bytes"] for v in stats.get("final", {}).values() for c in v.values())
    sources = _source_rows(stats)
    out = [
        _Section(
            "data-summary",
            "Summary",
            f"Prepared with `bloomforge data prepare`: {final_docs:,} documents, "
            f"{final_bytes / 1e6:,.2f} MB of UTF-8 text after filtering, deduplication and PII "
            "redaction. Sources were kept separate (ROOTS).",
            [(["setting", "value"], _settings_rows(stats))],
        ),
        _Section(
            "data-sources",
            f"Sources ({len(sources)})",
            tables=[(_SOURCE_HEADER, sources)],
            collapse=len(sources) > 10,
        ),
        _Section(
            "data-languages",
            "Languages (removal rates, as in the ROOTS paper's table)",
            tables=[(_LANG_HEADER, _language_rows(stats))],
            figure="removed_by_language.png",
        ),
    ]
    alone = alone_table(stats)
    # PII redaction rewrites text and removes nothing: not a row of the removal table.
    steps = {k: v for k, v in step_table(stats, "filter").items() if k != PIIRedactor.ledger_name}
    filt = _Section(
        "data-filters",
        "Removed by each filter, per language (ROOTS figure)",
        "% of a language's documents each filter would discard on its own (each_filter_alone), "
        "then % of the documents reaching each filter that it discarded, in pipeline order.",
        figure="discarded_by_filter_alone.png" if alone else "discarded_by_filter.png",
    )
    if alone:
        filt.tables.append(_matrix(alone, "filter alone"))
    if steps:
        filt.tables.append(_matrix(steps, "filter in turn"))
    if not filt.tables:
        filt.note = "No filter ran."
    out.append(filt)
    dedup = _dedup_by_language(stats)
    out.append(
        _Section(
            "data-dedup",
            "Deduplication, per language",
            "Documents removed by each dedup method (first copy kept)."
            if dedup
            else "No document was removed as a duplicate (or dedup was off).",
            [_matrix(dedup, "language", 0)] if dedup else [],
            figure="dedup_rates.png" if dedup else None,
        )
    )
    pii = _pii_by_language(stats)
    out.append(
        _Section(
            "data-pii",
            "PII redacted, per language",
            "Spans found by BigScience's regexes and replaced by `PI:<TYPE>`; the originals are "
            "only in `restricted/pii/`."
            if pii
            else "No PII span was redacted (or redaction was off).",
            [_matrix(dict(sorted(pii.items())), "language", 0)] if pii else [],
        )
    )
    skipped = [
        [s, reason, n] for s, r in stats["reader"].items() for reason, n in r["skipped"].items()
    ]
    if skipped:
        out.append(
            _Section(
                "data-malformed",
                "Malformed records set aside (malformed/)",
                tables=[(["source", "reason", "records"], skipped)],
                collapse=len(skipped) > 10,
            )
        )
    off = stats.get("filters_off", [])
    out.append(
        _Section(
            "data-off",
            "Filters and steps not applied",
            "Steps run: " + ", ".join(_steps_run(stats)) + "."
            if not off
            else "Steps run: " + ", ".join(_steps_run(stats)) + ". Not applied:",
            [(["source", "step", "why"], [[o["source"], o["filter"], o["why"]] for o in off])]
            if off
            else [],
            collapse=len(off) > 10,
        )
    )
    out.append(
        _Section(
            "data-restricted",
            "Restricted material",
            "The originals of redacted PII are only in `restricted/pii/`; `work/`, `excluded/` "
            "and `malformed/` hold text before redaction. Share `documents/` only.",
        )
    )
    return out


def data_card_markdown(stats: dict, title: str | None = "# Data card", level: int = 2) -> str:
    """The data card of a prepared corpus as markdown (DATA_CARD.md); sections at `level`."""
    parts = [title, ""] if title else []
    for sec in card_sections(stats):
        parts += [f"{'#' * level} {sec.title}", ""]
        if sec.note:
            parts += [sec.note, ""]
        for header, rows in sec.tables:
            parts += [md_table(header, rows), ""]
    return "\n".join(parts)


def data_card_html(stats: dict, figures: dict[str, bytes], level: int = 2) -> str:
    """The data card as an HTML fragment: headings at `level`, tables (long ones collapsed in
    `<details>`), the figures present in `figures` ({file name: PNG bytes}) embedded."""
    import markdown

    out = []
    for sec in card_sections(stats):
        out.append(f'<section id="{sec.key}"><h{level}>{html.escape(sec.title)}</h{level}>')
        if sec.note:  # our own markdown (code spans): rendered, not shown raw
            out.append(markdown.markdown(sec.note))
        for header, rows in sec.tables:
            table = html_table(header, rows)
            if sec.collapse:
                table = details(f"{len(rows)} rows", table)
            out.append(table)
        png = figures.get(sec.figure or "")
        if png is not None:
            data = base64.b64encode(png).decode("ascii")
            out.append(f'<img alt="{html.escape(sec.title)}" src="data:image/png;base64,{data}">')
        out.append("</section>")
    return "\n".join(out)


CSS = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child"
    "{text-align:left}img{max-width:100%}.note{color:#666}summary{cursor:pointer;color:#246}"
)


def render_html(stats: dict, figures: dict[str, bytes]) -> str:
    body = data_card_html(stats, figures)
    extra = [
        (title, name)
        for title, name in FIGURE_TITLES.items()
        if name in figures and name not in {s.figure for s in card_sections(stats)}
    ]
    for title, name in extra:
        data = base64.b64encode(figures[name]).decode("ascii")
        body += (
            f"<h2>{html.escape(title)}</h2>"
            f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
        )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>bloomforge data report</title>"
        f"<style>{CSS}</style></head><body><h1>Prepared corpus report</h1>{body}</body></html>"
    )


def write_report(prepared: str | Path) -> Path:
    """Write PREPARED/report.html and PREPARED/report/ (PNGs, stats.json, DATA_CARD.md)."""
    prepared = Path(prepared)
    stats = load_stats(prepared)
    folder = prepared / "report"
    pngs = figures(stats)
    with atomic_directory(folder) as tmp:
        for name, png in pngs.items():
            files.write_bytes(tmp / name, png)
        shutil.copyfile(prepared / "stats.json", tmp / "stats.json")
        files.write_text(tmp / "DATA_CARD.md", data_card_markdown(stats))
    page = render_html(stats, pngs)
    target = prepared / "report.html"
    files.write_text(target, page)
    return target


__all__ = [
    "card_sections",
    "data_card_html",
    "data_card_markdown",
    "figures",
    "load_stats",
    "write_report",
]
