"""`data inspect`: a prepared folder -> one static HTML page showing what each step removed.

In: a folder written by `data prepare` (config.yaml, stats.json, excluded/FILTER/SOURCE/,
work/filtered/, work/dedup/NAME/, documents/). Out: a self-contained HTML page (no scripts, no
external files) with, per language:
- per filter, a sample of the documents it removed (read from excluded/), each with the value the
  filter measured and the language's threshold (the same parameters and measures as
  `bloomforge.data.filters.quality`), and the kept documents nearest the threshold (a scan of at
  most `scan` filtered documents per source and language);
- per dedup method, clusters: the kept first copy beside the removed members (clusters rebuilt
  from the dedup stage's signatures with `bloomforge.data.dedup.near`, as `ResolveDuplicates`
  built them);
- PII spans redacted, counted by type (from stats.json).
PII originals never reach the page: they exist only in restricted/pii/ (and unparsed records in
malformed/), which are never read here; text from sources with PII redaction on is passed through
the redactor once more before it is shown, as a guard.
"""

from __future__ import annotations

import gzip
import heapq
import html
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.data.report import load_stats
from bloomforge.errors import BloomforgeError
from bloomforge.tables import fmt, html_table

TITLE = "bloomforge data inspect"
SHOW_CHARS = 600
# (bound, parameter) per filter: removed when value < min or value > max (BigScience's
# filtering.py conditions, as implemented in bloomforge.data.filters.quality).
BOUNDS: dict[str, list[tuple[str, str]]] = {
    "number_words": [("min", "number_words_min_cutoff"), ("max", "number_words_max_cutoff")],
    "character_repetition": [("max", "character_repetition_max_cutoff")],
    "word_repetition": [("max", "word_repetition_max_cutoff")],
    "special_characters": [("max", "special_characters_max_cutoff")],
    "stopwords": [("min", "stopwords_min_cutoff")],
    "flagged_words": [("max", "flagged_words_max_cutoff")],
    "lang_id": [("min", "lang_id_min_cutoff")],
    "perplexity": [("max", "perplexity_max_cutoff")],
}


@dataclass
class Shown:
    """One document as the page shows it."""

    id: str
    source: str
    where: str  # raw input file:line
    text: str
    value: int | float | None = None
    margin: float = 0.0  # relative distance to the threshold (>= 0 on the kept side)
    status: str = ""


@dataclass
class View:
    languages: set[str] = field(default_factory=set)
    removed: dict = field(default_factory=lambda: defaultdict(list))  # (lang, filter) -> [Shown]
    removed_total: dict = field(default_factory=lambda: defaultdict(int))
    near: dict = field(default_factory=lambda: defaultdict(list))  # (lang, filter) -> heap
    thresholds: dict = field(default_factory=dict)  # (lang, filter) -> text
    clusters: dict = field(default_factory=lambda: defaultdict(list))  # (lang, method) -> list
    notes: list[str] = field(default_factory=list)


def _read_jsonl(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise BloomforgeError(f"{path} line {number}: not valid JSON ({e})") from None


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.jsonl*") if p.is_file())


class _Measures:
    """The filters of each source, built from the prepared folder's own config.yaml."""

    def __init__(self, prepared: Path) -> None:
        from bloomforge.data.prepare.config import PrepareConfig
        from bloomforge.typed_config import ConfigError, from_dict, load_yaml

        path = prepared / "config.yaml"
        try:
            self.config = from_dict(PrepareConfig, load_yaml(path))
        except (ConfigError, OSError, ValueError) as e:
            raise BloomforgeError(f"{path}: not a `data prepare` config ({e})") from None
        self.sources = {s.name: s for s in self.config.sources}
        self._filters: dict[str, dict[str, Any]] = {}

    def filters(self, source: str) -> dict[str, Any]:
        if source not in self._filters:
            from bloomforge.data.filters import FILTER_NAMES, disabled_filters
            from bloomforge.data.filters.quality import FILTER_CLASSES
            from bloomforge.data.prepare.jobs import filter_config

            src = self.sources.get(source)
            built: dict[str, Any] = {}
            if src is not None and src.filters_on and src.language != "code":
                fcfg = filter_config(self.config, src)
                off = disabled_filters(fcfg)
                built = {n: FILTER_CLASSES[n](fcfg) for n in FILTER_NAMES if n not in off}
            self._filters[source] = built
        return self._filters[source]

    def pii_types(self, source: str) -> list[str] | None:
        src = self.sources.get(source)
        return list(self.config.pii.types) if src is not None and src.pii else None

    def measure(self, name: str, flt: Any, doc: Any) -> tuple[int | float | None, str, float]:
        """(value, threshold text, margin) of filter `name` on a datatrove Document."""
        from bloomforge.data.filters import quality

        p = flt.settings(str(doc.metadata.get("language", "unknown")))
        if not p[flt.cond_key]:
            return None, "not applied to this language", 0.0
        value: int | float | None
        if name == "number_words":
            value = len(flt.words(doc, p))
        elif name == "character_repetition":
            value = quality.character_repetition_ratio(doc.text, p["character_repetition_length"])
        elif name == "word_repetition":
            value = quality.word_repetition_ratio(flt.words(doc, p), p["word_repetition_length"])
        elif name == "special_characters":
            value = quality.special_characters_ratio(doc.text, p["special_characters"])
        elif name in ("stopwords", "flagged_words"):
            has_list = bool(p["_list"])
            value = quality.list_ratio(flt.words(doc, p), p["_list"], *quality._groups(p))
            value = value if has_list else None
        elif name == "lang_id":
            score = doc.metadata.get("language_score")
            value = None if score is None else float(score)
        elif name == "perplexity":
            model = p.get("_model")
            value = None if model is None else quality.perplexity(doc.text, model, p["_tokenizer"])
        else:
            return None, "", 0.0
        bounds = [(kind, p[key]) for kind, key in BOUNDS[name]]
        text = " or ".join(f"{'<' if k == 'min' else '>'} {_num(v)}" for k, v in bounds)
        if value is None:
            return None, f"removed if {text} (no value for this language)", 0.0
        # Signed relative distance to each bound, (value - bound) / max(|value|, |bound|): in
        # [-1, 1], >= 0 on the kept side, so a minimum of 13 and a maximum of 100,000 compare.
        margins = [
            (value - v if k == "min" else v - value) / max(abs(value), abs(v), 1e-12)
            for k, v in bounds
        ]
        return value, f"removed if {text}", min(margins)


def _num(value: float | None) -> str:
    """A measured value or threshold: integers as they are, ratios to 4 significant digits."""
    if value is None:
        return ""
    return fmt(value) if isinstance(value, int) else f"{value:.4g}"


def _shown(doc: dict, text: str) -> Shown:
    meta = doc.get("metadata") or {}
    where = str(meta.get("file", ""))
    if meta.get("line") is not None:
        where += f":{meta['line']}"
    return Shown(str(doc.get("id", "")), str(meta.get("source", "")), where, text)


def _safe_text(text: str, types: list[str] | None) -> str:
    """The first SHOW_CHARS characters, redacted again where the source's PII was redacted."""
    text = text[:SHOW_CHARS]
    if types:
        from bloomforge.data.pii import redact

        text, _ = redact(text, types)
    return text


def _removal_totals(stats: dict) -> dict[tuple[str, str], int]:
    """{(language, filter): documents removed} of the filter stages, from the ledger."""
    groups = {s["name"]: s["group"] for s in stats.get("stages", [])}
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for r in stats.get("ledger", []):
        removal = r["outcome"] not in ("in", "kept") and r["step"] != "read"
        if groups.get(r["stage"]) == "filter" and removal and r["documents"]:
            totals[(r["language"], r["step"])] += r["documents"]
    return totals


def _collect_filters(
    prepared: Path, stats: dict, m: _Measures, view: View, sample: int, scan: int
) -> None:
    from datatrove.data import Document

    view.removed_total.update(_removal_totals(stats))
    for step_dir in sorted((prepared / "excluded").glob("*")):
        # Stop reading a filter's files once every language has its sample (web-scale folders
        # hold millions of removed documents).
        wanted = {k: min(n, sample) for k, n in view.removed_total.items() if k[1] == step_dir.name}
        for path in _files(step_dir):
            if wanted and all(len(view.removed[k]) >= n for k, n in wanted.items()):
                break
            for doc in _read_jsonl(path):
                meta = doc.get("metadata") or {}
                name, source = str(meta.get("filter_step", step_dir.name)), str(meta["source"])
                lang = str(meta.get("language", "unknown"))
                key = (lang, name)
                view.languages.add(lang)
                if len(view.removed[key]) >= sample:
                    continue
                flt = m.filters(source).get(name)
                shown = _shown(doc, _safe_text(doc["text"], m.pii_types(source)))
                shown.status = str(meta.get("filter_reason", "removed"))
                if flt is not None:
                    d = Document(text=doc["text"], id=shown.id, metadata=meta)
                    shown.value, view.thresholds[key], shown.margin = m.measure(name, flt, d)
                view.removed[key].append(shown)
    # Kept documents nearest each threshold: the filter stage's output (kept by every filter).
    heaps: dict[tuple[str, str], list] = defaultdict(list)
    count = 0
    for source in m.sources:
        flts = m.filters(source)
        seen: dict[str, int] = defaultdict(int)
        for path in _files(prepared / "work" / "filtered" / source) if flts else []:
            for doc in _read_jsonl(path):
                meta = doc.get("metadata") or {}
                lang = str(meta.get("language", "unknown"))
                if seen[lang] >= scan:
                    continue
                seen[lang] += 1
                count += 1
                view.languages.add(lang)
                d = Document(text=doc["text"], id=str(doc.get("id", "")), metadata=meta)
                for name, flt in flts.items():
                    value, threshold, margin = m.measure(name, flt, d)
                    if value is None:
                        continue
                    view.thresholds.setdefault((lang, name), threshold)
                    heap = heaps[(lang, name)]
                    item = (-margin, count, value, source, doc)  # the nearest stay in the heap
                    if len(heap) < sample:
                        heapq.heappush(heap, item)
                    elif item > heap[0]:
                        heapq.heapreplace(heap, item)
    for key, heap in heaps.items():
        for neg, _, value, source, doc in sorted(heap, reverse=True):
            shown = _shown(doc, _safe_text(doc["text"], m.pii_types(source)))
            shown.value, shown.margin, shown.status = value, -neg, "kept"
            view.near[key].append(shown)


def _representatives(work: Path, cfg: Any) -> tuple[Any, Any, Any, dict[str, Any]] | None:
    """(positions, languages, reason codes, {method: index of each one's first copy}), in
    corpus order, rebuilt from the signatures as `ResolveDuplicates` built them."""
    import numpy as np

    from bloomforge.data.dedup.find import _minhash_cluster_ids, load_resolved
    from bloomforge.data.dedup.io import load_arrays
    from bloomforge.data.dedup.near import group_representatives, simhash_representatives

    parts, rank_positions = [], {}
    for path in sorted((work / "signatures").glob("*.npz")):
        part = load_arrays(path)
        rank_positions[int(path.stem)] = part["pos"]
        parts.append(part)
    if not parts or not (work / "resolved.npz").is_file():
        return None
    cols = {k: np.concatenate([p[k] for p in parts]) for k in ("pos", "lang", "text", "url")}
    cols |= {k: np.concatenate([p[k] for p in parts]) for k in ("sim", "has_sim")}
    order = np.argsort(cols["pos"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    pos, reason = load_resolved(str(work))
    if not np.array_equal(pos, cols["pos"]):
        return None  # signatures from another run: nothing reliable to show
    n, reps = pos.size, {}
    if cfg.exact_text:
        reps["exact_text"] = group_representatives(cols["text"])
    if cfg.exact_url:
        reps["exact_url"] = group_representatives(cols["url"])
    if cfg.simhash:
        has = np.flatnonzero(cols["has_sim"])
        rep = np.arange(n)
        found = simhash_representatives(
            cols["sim"][has], cfg.simhash_max_distance, cfg.simhash_blocks
        )
        rep[has] = has[found]
        reps["simhash"] = rep
    clusters_dir = work / "minhash" / "clusters"
    if cfg.minhash and clusters_dir.is_dir():
        clusters = _minhash_cluster_ids(clusters_dir, rank_positions)
        keys = np.zeros(n, dtype=np.uint64)
        if clusters:
            at = np.searchsorted(pos, np.fromiter(clusters, np.uint64, len(clusters)))
            keys[at] = np.fromiter(clusters.values(), np.uint64, len(clusters)) + 1
        reps["minhash"] = group_representatives(keys)
    return pos, cols["lang"], reason, reps


def _lines_at(folder: Path, wanted: set[int]) -> dict[int, dict]:
    """Documents of the dedup input folder at corpus positions (file index << 32 | line)."""
    from bloomforge.data.dedup.io import input_files

    files = input_files(str(folder))
    by_file: dict[int, set[int]] = defaultdict(set)
    for p in wanted:
        by_file[p >> 32].add(p & 0xFFFFFFFF)
    out: dict[int, dict] = {}
    for index, lines in sorted(by_file.items()):
        if index >= len(files):
            continue
        last = max(lines)
        for line, doc in enumerate(_read_jsonl(folder / files[index])):
            if line in lines:
                out[(index << 32) | line] = doc
            if line >= last:
                break
    return out


def _collect_dedup(prepared: Path, m: _Measures, stats: dict, view: View, sample: int) -> None:
    from bloomforge.data.dedup.find import CODE, REASONS
    from bloomforge.data.prepare.jobs import CORPUS, dedup_config

    for name in stats.get("dedup_summary", {}):
        work = prepared / "work" / "dedup" / name
        src = m.config.sources[0] if name == CORPUS else m.sources.get(name)
        if src is None:
            continue
        built = _representatives(work, dedup_config(m.config, src))
        if built is None:
            view.notes.append(f"{work}: no dedup signatures to rebuild clusters from")
            continue
        pos, langs, reason, reps = built
        folder = prepared / "work" / "filtered" / ("" if name == CORPUS else name)
        picked: list[tuple[str, str, int, list[int]]] = []
        for method, rep in reps.items():
            members: dict[int, list[int]] = defaultdict(list)
            for i in (reason == CODE[method]).nonzero()[0].tolist():
                members[int(rep[i])].append(i)
            per_lang: dict[str, int] = defaultdict(int)
            for first, removed in members.items():
                lang = str(langs[first])
                if per_lang[lang] < sample:
                    per_lang[lang] += 1
                    picked.append((lang, method, first, removed[:5]))
        wanted = {int(pos[i]) for _, _, f, r in picked for i in (f, *r)}
        docs = _lines_at(folder, wanted)
        for lang, method, first, removed in picked:
            row = []
            for i in (first, *removed):
                doc = docs.get(int(pos[i]))
                if doc is None:
                    continue
                source = str((doc.get("metadata") or {}).get("source", name))
                shown = _shown(doc, _safe_text(doc["text"], m.pii_types(source)))
                shown.status = REASONS[int(reason[i])]
                row.append(shown)
            if row:
                view.languages.add(lang)
                view.clusters[(lang, method)].append(row)


def collect(prepared: str | Path, sample: int = 10, scan: int = 2000) -> tuple[dict, View]:
    """Read the prepared folder: stats.json and the samples the page shows."""
    prepared = Path(prepared)
    if sample < 1 or scan < 1:
        raise BloomforgeError(f"data inspect: --sample {sample} and --scan {scan}: at least 1")
    stats = load_stats(prepared)
    m = _Measures(prepared)
    view = View()
    _collect_filters(prepared, stats, m, view, sample, scan)
    _collect_dedup(prepared, m, stats, view, sample)
    for langs in stats.get("pii", {}).values():
        view.languages.update(langs)
    return stats, view


_CSS = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1em;width:100%}td,th{border:1px solid #ccc;"
    "padding:3px 6px;vertical-align:top;text-align:left}th{background:#f3f3f3}"
    ".text{white-space:pre-wrap;font-family:monospace;font-size:90%}.num{text-align:right}"
    ".cluster td{width:50%}.note{color:#666}nav a{margin-right:.6em}"
)


def _doc_rows(docs: list[Shown], name: str, kind: str) -> str:
    head = "<tr><th>document</th><th>value</th><th>outcome</th><th>text</th></tr>"
    rows = []
    for d in docs:
        value = _num(d.value)
        attrs = (
            f'class="{kind}" data-id="{html.escape(d.id)}" data-filter="{html.escape(name)}" '
            f'data-value="{html.escape(repr(d.value))}"'
        )
        rows.append(
            f"<tr {attrs}><td>{html.escape(d.id)}<br><span class=note>{html.escape(d.source)}"
            f" {html.escape(d.where)}</span></td><td class=num>{html.escape(value)}</td>"
            f"<td>{html.escape(d.status)}</td><td class=text>{html.escape(d.text)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _cluster(members: list[Shown], method: str) -> str:
    first, rest = members[0], members[1:]

    def cell(d: Shown) -> str:
        return (
            f'<div data-id="{html.escape(d.id)}" data-status="{html.escape(d.status)}">'
            f"<b>{html.escape(d.status)}</b> {html.escape(d.id)} <span class=note>"
            f"{html.escape(d.where)}</span><div class=text>{html.escape(d.text)}</div></div>"
        )

    return (
        f'<table class=cluster data-method="{html.escape(method)}"><tr><th>first copy</th>'
        f"<th>removed as {html.escape(method)} duplicates</th></tr><tr><td>{cell(first)}</td>"
        f"<td>{''.join(cell(d) for d in rest)}</td></tr></table>"
    )


def _pii_section(stats: dict) -> list[str]:
    per_lang: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for langs in stats.get("pii", {}).values():
        for lang, types in langs.items():
            for kind, n in types.items():
                per_lang[lang][kind] += n
    h = ["<h2 id=pii>PII redacted, by type</h2>"]
    if not per_lang:
        return [*h, "<p class=note>No PII span was redacted (or redaction was off).</p>"]
    types = sorted({t for v in per_lang.values() for t in v})
    rows = [[lang, *(v.get(t, 0) for t in types), sum(v.values())] for lang, v in per_lang.items()]
    rows.sort()
    rows.append(["all", *(sum(v.get(t, 0) for v in per_lang.values()) for t in types), None])
    rows[-1][-1] = sum(r[-1] for r in rows[:-1])
    note = (
        "<p class=note>Spans replaced by <code>PI:TYPE</code> in every document shown here. The "
        "originals are only in <code>restricted/pii/</code> and are not on this page.</p>"
    )
    return [*h, html_table(["language", *types, "spans"], rows, "pii"), note]


def render(stats: dict, view: View, prepared: str) -> str:
    from bloomforge.data.filters import FILTER_NAMES

    langs = sorted(view.languages)
    dedup_counts: dict[tuple[str, str], int] = defaultdict(int)
    for summary in stats.get("dedup_summary", {}).values():
        for method, per_lang in summary.get("duplicates", {}).items():
            for lang, n in per_lang.items():
                dedup_counts[(lang, method)] += n
    h = [f"<h1>What each step removed: {html.escape(prepared)}</h1>"]
    read = sum(t["read"] for t in stats["totals"].values())
    final = sum(t["final"] for t in stats["totals"].values())
    h.append(
        f"<p>{fmt(read)} documents read, {fmt(final)} kept. Per language: a sample of the "
        "documents each filter removed, with the value it measured and the language's "
        "threshold; the kept documents nearest that threshold; duplicate clusters.</p>"
    )
    h.append(
        "<nav>"
        + "".join(f'<a href="#lang-{html.escape(x)}">{html.escape(x)}</a>' for x in langs)
        + "</nav>"
    )
    h += _pii_section(stats)
    h += [f"<p class=note>{html.escape(n)}</p>" for n in view.notes]
    for lang in langs:
        h.append(f'<section id="lang-{html.escape(lang)}"><h2>{html.escape(lang)}</h2>')
        names = [n for n in FILTER_NAMES if (lang, n) in view.removed or (lang, n) in view.near]
        names += sorted({n for (x, n) in view.removed if x == lang} - set(names))
        for name in names:
            key = (lang, name)
            total = view.removed_total.get(key, 0)
            h.append(
                f'<h3 id="{html.escape(lang)}-{html.escape(name)}">{html.escape(name)}: '
                f"{fmt(total)} removed</h3><p>{html.escape(view.thresholds.get(key, ''))}</p>"
            )
            if view.removed.get(key):
                shown = len(view.removed[key])
                h.append(f"<p class=note>removed ({shown} of {fmt(total)} shown)</p>")
                h.append(_doc_rows(view.removed[key], name, "removed"))
            if view.near.get(key):
                h.append("<details><summary>kept, nearest the threshold</summary>")
                h += [_doc_rows(view.near[key], name, "near"), "</details>"]
        methods = sorted({mth for (x, mth) in view.clusters if x == lang})
        if not names and not methods:
            h.append(
                "<p class=note>Nothing to show: no filter measured these documents (filters off, "
                "or a code source) and no duplicate was removed.</p>"
            )
        if methods or any(x == lang for x, _ in dedup_counts):
            h.append("<h3>Deduplication</h3>")
        for method in methods:
            n = dedup_counts.get((lang, method), 0)
            h.append(f"<h4>{html.escape(method)}: {fmt(n)} removed</h4>")
            h += [_cluster(c, method) for c in view.clusters[(lang, method)]]
        h.append("</section>")
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{TITLE}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(h)}</body></html>\n"
    )


def write_viewer(
    prepared: str | Path, out: str | Path | None = None, sample: int = 10, scan: int = 2000
) -> Path:
    """Write the viewer page (default PREPARED/inspect.html) to a temporary name, then rename.

    An existing `out` is replaced only if it is an earlier viewer page."""
    prepared = Path(prepared)
    target = Path(out) if out is not None else prepared / "inspect.html"
    if target.is_dir():
        raise BloomforgeError(f"{target}: is a folder; --out names the HTML file to write")
    if target.exists():
        with open(target, encoding="utf-8", errors="replace") as f:
            if f"<title>{TITLE}</title>" not in f.read(4096):
                raise BloomforgeError(f"{target}: not an earlier `data inspect` page; move it away")
    stats, view = collect(prepared, sample, scan)
    page = render(stats, view, str(prepared))
    files.write_text(target, page)
    return target  # the command says where (data/commands.py); a library caller has the path
