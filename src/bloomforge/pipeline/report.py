"""The run report: one self-contained HTML page, plus MODEL_CARD.md and DATA_CARD.md.

In: a run folder and its recipe (read through `cards.collect_facts` into a `RunFacts`; file names
from `layout.RunLayout`). Out: `OUT/report.html`
(figures drawn with matplotlib's Agg backend and embedded as base64 PNGs, no external files,
scripts or fonts, so it opens offline), `OUT/MODEL_CARD.md`, `OUT/DATA_CARD.md`; each written to
a temporary name and renamed. Sections with nothing to show (no data/stats.json before `data
prepare` ran, no codecarbon) are left out or say so in one line.

The data card's filtering part is `bloomforge.data.report.data_card_html` (the same sections and
figures as `bloomforge data report`); the model card is rendered from its markdown with
Python-Markdown; tables go through `bloomforge.tables`.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.pipeline.cards import RunFacts, collect_facts, data_card, model_card, share_rows
from bloomforge.pipeline.layout import RunLayout
from bloomforge.recipe import Recipe
from bloomforge.tables import details, html_table, pct

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em}img{max-width:100%}
.note{color:#666}summary{cursor:pointer;color:#246}"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


table = html_table
LONG_TABLE = 10  # rows; longer per-source tables are collapsed (<details>)


def _maybe_collapsed(what: str, head: list[str], rows: list[list[Any]]) -> str:
    out = table(head, rows)
    return details(f"{what}: {len(rows)} rows", out) if len(rows) > LONG_TABLE else out


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _bar(labels: list[str], values: list[float], ylabel: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(labels) + 2), 3))
    ax.bar(labels, values, color="#4a7db5")
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=45)
    return _png(fig)


def training_curves(metrics: list[dict[str, Any]]) -> str:
    """Loss, lr, batch size, grad norm, throughput (train) and loss per group (valid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [m for m in metrics if m.get("kind") == "train"]
    valid = [m for m in metrics if m.get("kind") == "valid"]
    panels = [
        ("loss", "train loss"),
        ("lr", "learning rate"),
        ("batch_size", "batch size (samples)"),
        ("grad_norm", "grad norm"),
        ("tokens_per_s", "tokens / s"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        pts = [(m["tokens"], m[key]) for m in train if m.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), lw=1)
        ax.set_title(title)
        ax.set_xlabel("tokens")
    ax = axes.flat[5]
    groups = sorted({k.split("/")[0] for m in valid for k in m if k.endswith("/loss")})
    for g in groups:
        pts = [(m["step"], m[f"{g}/loss"]) for m in valid if f"{g}/loss" in m]
        ax.plot(*zip(*pts, strict=True), marker="o", label=g)
    ax.set_title("validation loss per group")
    ax.set_xlabel("step")
    if groups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def render_html(facts: RunFacts) -> str:
    h: list[str] = [
        f"<h1>{_esc(facts.title)}</h1>",
        f"<p class=note>run folder {_esc(facts.run)}</p>",
    ]
    langs = facts.languages
    h.append('<h2 id="data-card">Data card</h2>')
    corpus = facts.corpus
    if corpus:
        h.append(
            f"<p>Corpus gathered on this machine: {corpus['catalogues_found']} message catalogues "
            f"under {_esc(corpus['locale_dir'])}, languages chosen: "
            f"{_esc(', '.join(corpus['languages_chosen']) or 'none')}; code from "
            f"{_esc(corpus.get('code_dir'))}.</p>"
        )
        h += [f"<p class=note>{_esc(n)}</p>" for n in corpus["notes"]]
    if langs:
        h.append("<h3>Languages (tokens trained on, after the held-out split)</h3>")
        h.append(table(["language", "tokens", "documents", "share"], share_rows(langs)))
        h.append(_bar(list(langs), [100 * r["share"] for r in langs.values()], "% of tokens"))
        h.append(f"<h3>Sources ({len(facts.sources)})</h3>")
        h.append(
            _maybe_collapsed(
                "tokens per source",
                ["source", "tokens", "documents", "share"],
                share_rows(facts.sources),
            )
        )
    stats = facts.data_stats
    if stats:
        from bloomforge.data.report import data_card_html, figures

        h.append("<h3>Filtering, deduplication and PII (data/stats.json)</h3>")
        h.append(data_card_html(stats, figures(stats), level=4))
    else:
        h.append(
            "<p class=note>No data/stats.json: the documents were prepared outside this run.</p>"
        )
    h += _tokenizer_html(facts)
    h += _model_html(facts)
    h += _finetune_html(facts)
    h += _eval_html(facts)
    h += _energy_html(facts)
    h.append("<h2>Stages</h2>")
    rows = [
        [
            s,
            f"{r['seconds']:.1f}",
            f"{r['stage_peak_rss_mb']:.0f}" if r.get("stage_peak_rss_mb") is not None else "",
            f"{r.get('max_rss_mb', 0):.0f}",
            r["finished"],
            r["fingerprint"][:12],
        ]
        for s, r in facts.records.items()
    ]
    header = ["stage", "seconds", "stage peak RSS (MB)", "process peak so far (MB)", "finished"]
    h.append(table([*header, "fingerprint"], rows))
    body = "\n".join(h)
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{_esc(facts.title)}</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _tokenizer_html(facts: RunFacts) -> list[str]:
    h = ["<h2>Tokenizer</h2>"]
    s = facts.sampling
    if s:
        h.append(
            f"<p>Byte-level BPE (BLOOM's pre-tokenizer), {s['vocab_size']:,} tokens "
            f"(asked {s['vocab_size_requested']:,}), languages sampled with alpha "
            f"{s.get('alpha')}.</p>"
        )
    fert = (facts.fertility or {}).get("languages", {})
    if fert:
        rows = [
            [
                k,
                f"{r['words']:,}",
                r["word_source"],
                f"{r['ours']['fertility'] or 0:.3f}",
                f"{r['ours']['tokens_per_byte']:.3f}",
            ]
            for k, r in fert.items()
        ]
        h.append(
            table(
                ["language", "words", "words from", "fertility (tokens/word)", "tokens/byte"], rows
            )
        )
        h.append(
            _bar(
                list(fert), [r["ours"]["tokens_per_byte"] for r in fert.values()], "tokens per byte"
            )
        )
    return h


def _model_html(facts: RunFacts) -> list[str]:
    import markdown

    h = ['<h2 id="model-card">Model card</h2>']
    card = model_card(facts).split("## Training Data")[0]
    # Our own markdown, but titles and paths come from the recipe: raw HTML is escaped. The
    # card's own title is this section's heading; its sections go one level down (h3, h4).
    lines = html.escape(card, quote=False).splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    card = "\n".join("#" + line if line.startswith("#") else line for line in lines)
    h.append(f'<div class="model-card">{markdown.markdown(card, extensions=["tables"])}</div>')
    if facts.metrics:
        h += ["<h3>Training curves</h3>", training_curves(facts.metrics)]
    return h


def _finetune_html(facts: RunFacts) -> list[str]:
    """Multitask finetuning: the mixture, the loss curves, rank evaluation before vs after."""
    ft = facts.finetune
    if not ft:
        return []
    h = ['<h2 id="finetuning">Multitask finetuning (BLOOMZ-style)</h2>']
    langs = sorted({m["language"] for m in ft.mixture})
    datasets = sorted({m["dataset"] for m in ft.mixture})
    h.append(
        f"<p>{sum(m['records'] for m in ft.mixture):,} prompted records: "
        f"{len(datasets)} dataset(s) x {len(langs)} language(s); "
        f"{sum(ft.tokens.values()):,} tokens (inputs and targets).</p>"
    )
    rows = [[m["dataset"], m["language"], m["templates"], m["records"]] for m in ft.mixture]
    h.append(_maybe_collapsed("the mixture", ["dataset", "language", "templates", "records"], rows))
    if ft.tokens:
        total = sum(ft.tokens.values()) or 1
        rows = [[k, v, pct(v / total)] for k, v in sorted(ft.tokens.items())]
        h.append(_maybe_collapsed("tokens per language", ["language", "tokens", "share"], rows))
    if ft.metrics:
        h.append("<h3>Finetuning curves</h3>")
        h.append(training_curves(ft.metrics))
    rank = ft.rank_eval
    if rank:
        before, after = rank["before"], rank["after"]
        h.append("<h3>Held-out rank evaluation, median accuracy over prompts</h3>")
        rows = []
        for task, entry in after.items():
            for lang, s in entry["summary"].items():
                b = before.get(task, {}).get("summary", {}).get(lang, {})
                rows.append(
                    [
                        task,
                        lang,
                        s["n_prompts"],
                        f"{b.get('median', float('nan')):.4f}",
                        f"{s['median']:.4f}",
                        f"{s['min']:.4f} - {s['max']:.4f}",
                    ]
                )
        h.append(
            table(["task", "language", "prompts", "before", "after", "after: min - max"], rows)
        )
        rows = [
            [
                task,
                name,
                lang,
                f"{_prompt_acc(before, task, name, lang):.4f}",
                f"{m['acc']:.4f}",
            ]
            for task, entry in after.items()
            for name, per in entry["prompts"].items()
            for lang, m in per.items()
        ]
        h.append(
            _maybe_collapsed(
                "accuracy per prompt", ["task", "prompt", "language", "before", "after"], rows
            )
        )
    return h


def _prompt_acc(results: dict[str, Any], task: str, prompt: str, lang: str) -> float:
    per = results.get(task, {}).get("prompts", {}).get(prompt, {})
    return per.get(lang, {}).get("acc", float("nan"))


def _eval_html(facts: RunFacts) -> list[str]:
    ev = facts.eval or {}
    h = ["<h2>Evaluation</h2>"]
    ppl = {k: v for k, v in (ev.get("perplexity") or {}).items() if not k.startswith("_")}
    if ppl:
        h.append("<h3>Perplexity per language (held-out documents)</h3>")
        rows = [
            [
                k,
                v["documents"],
                f"{v['tokens']:,}",
                f"{v['token_perplexity']:.2f}",
                f"{v['byte_perplexity']:.3f}",
                f"{v['bits_per_byte']:.3f}",
            ]
            for k, v in ppl.items()
        ]
        h.append(
            table(
                ["language", "documents", "tokens", "token ppl", "byte ppl", "bits per byte"], rows
            )
        )
        h.append(_bar(list(ppl), [v["bits_per_byte"] for v in ppl.values()], "bits per byte"))
    for task, res in (ev.get("tasks") or {}).items():
        rows = [
            [sub, int(m["n"]), *(f"{m[k]:.4f}" for k in m if k != "n" and "stderr" not in k)]
            for sub, m in {**res["subsets"], "all": res["all"]}.items()
        ]
        metric_names = [k for k in res["all"] if k != "n" and "stderr" not in k]
        h += [f"<h3>{_esc(task)}</h3>", table(["subset", "n", *metric_names], rows)]
    for task, entry in (ev.get("prompted") or {}).items():
        rows = [
            [lang, m["n_prompts"], *(f"{m[k]:.4f}" for k in ("median", "min", "max"))]
            for lang, m in entry["summary"].items()
        ]
        h += [
            f"<h3>{_esc(task)}: accuracy over prompts</h3>",
            table(["subset", "prompts", "median", "min", "max"], rows),
        ]
    gens = ev.get("generations") or {}
    if gens:
        h.append("<h3>Generations per language</h3>")
        rows = [[lang, g["prompt"], g["continuation"]] for lang, gs in gens.items() for g in gs]
        h.append(table(["language", "prompt", "continuation"], rows))
    return h


def _energy_html(facts: RunFacts) -> list[str]:
    e = facts.energy
    h = ["<h2>Energy and CO2</h2>"]
    if e is None:
        return [*h, "<p class=note>No training time recorded.</p>"]
    how = (
        "measured by codecarbon"
        if e["measured"]
        else (f"estimated: training time x {e['power_w']:g} W assumed draw; grid {e['grid']}")
    )
    rows = [
        ["training seconds", f"{e['seconds']:.0f}"],
        ["energy (kWh)", f"{e['kwh']:.4g}"],
        ["CO2eq (kg)", f"{e['kg_co2']:.4g}"],
        ["how", how],
    ]
    return [*h, table(["", ""], rows)]


def write_report(run: Path, recipe: Recipe) -> list[Path]:
    """Write report.html, MODEL_CARD.md and DATA_CARD.md into the run folder; their paths."""
    facts = collect_facts(run, recipe)
    paths = list(RunLayout(run).reports)
    texts = (render_html(facts), model_card(facts), data_card(facts))
    for path, text in zip(paths, texts, strict=True):
        files.write_text(path, text)
    return paths
