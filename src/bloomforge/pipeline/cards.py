"""What a run folder says about its data and model, and the two cards written from it.

In: a run folder (corpus/manifest.json, data/stats.json, tokenizer/*.json, tokens/manifest.json,
train/ (config.yaml, metrics.jsonl, emissions.csv), eval/results.json, .stages/*.json: named by
`pipeline.layout.RunLayout`) and the run recipe. Out: `collect_facts` -> one typed `RunFacts`
(every part optional: what is missing is None or empty), and `model_card` / `data_card` ->
markdown, laid out like BigScience's BLOOM model card (Model Details, Uses, Bias/Risks/
Limitations, Training Data, Evaluation, Environmental Impact). The data card's filtering part is
`bloomforge.data.report.data_card_markdown`, the one data card of `bloomforge data report` too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from bloomforge.pipeline.config import STAGES
from bloomforge.pipeline.layout import RunLayout
from bloomforge.recipe import Recipe
from bloomforge.tables import md_table, pct
from bloomforge.training.metrics import read_metrics


class Share(TypedDict):
    """Tokens and documents of one language or source, and its share of all tokens."""

    tokens: int
    documents: int
    share: float


class Energy(TypedDict):
    """Training energy and CO2: codecarbon's measurement, else time x assumed power x grid."""

    measured: bool
    kwh: float
    kg_co2: float
    seconds: float
    source: NotRequired[str]  # measured: the emissions.csv read
    power_w: NotRequired[float]  # estimated: the assumed draw
    grid: NotRequired[str]  # estimated: the grid's intensity and its source


class MixtureRow(TypedDict):
    """Prompted records of one dataset and language in the finetuning mixture."""

    dataset: str
    language: str
    templates: int
    records: int


@dataclass(frozen=True)
class ModelFacts:
    """The trained model: its recipe (train/config.yaml) and what it cost."""

    recipe: Recipe
    parameters: int
    non_embedding: int
    flops_per_token: int
    training_tokens: int | None  # tokens seen, from the last training step's metrics
    training_flops: float | None


@dataclass(frozen=True)
class FinetuneFacts:
    """Multitask finetuning: the mixture, its tokens per language (the stage's record), the
    finetune run's metrics and the rank evaluation before and after (finetune/rank_eval.json)."""

    mixture: list[MixtureRow]
    tokens: dict[str, int]
    metrics: list[dict[str, Any]]
    rank_eval: dict[str, Any] | None


@dataclass(frozen=True)
class RunFacts:
    """What a run folder holds, read once for the report and both cards. The JSON files of
    the stages are kept as they were written (their own formats); None where a file is missing."""

    title: str
    run: str = ""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its record
    corpus: dict[str, Any] | None = None  # corpus/manifest.json
    data_stats: dict[str, Any] | None = None  # data/stats.json
    sampling: dict[str, Any] | None = None  # tokenizer/sampling.json
    fertility: dict[str, Any] | None = None  # tokenizer/fertility.json
    tokens: dict[str, Any] | None = None  # tokens/manifest.json
    languages: dict[str, Share] = field(default_factory=dict)  # most tokens first
    sources: dict[str, Share] = field(default_factory=dict)  # most tokens first
    metrics: list[dict[str, Any]] = field(default_factory=list)  # train/metrics.jsonl
    eval: dict[str, Any] | None = None  # eval/results.json
    model: ModelFacts | None = None
    energy: Energy | None = None
    finetune: FinetuneFacts | None = None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _energy(run: Path, recipe: Recipe, train_seconds: float | None) -> Energy | None:
    """codecarbon's measured emissions.csv (summed over its rows), else an estimate."""
    from bloomforge.science.carbon import carbon_report, energy_from_mwh, grid_intensity

    csv_file = RunLayout(run).train_emissions
    if csv_file.is_file():
        with open(csv_file, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows:
            kwh = sum(float(r.get("energy_consumed") or 0) for r in rows)
            kg = sum(float(r.get("emissions") or 0) for r in rows)
            secs = sum(float(r.get("duration") or 0) for r in rows)
            return {
                "measured": True,
                "kwh": kwh,
                "kg_co2": kg,
                "seconds": secs,
                "source": str(csv_file),
            }
    if train_seconds is None:
        return None
    country = recipe.report.grid_country or recipe.train.carbon_country
    grid = grid_intensity(country)
    kwh = train_seconds / 3600 * recipe.report.power_w / 1000
    rep = carbon_report(energy_from_mwh(kwh / 1000), grid.gco2_per_kwh, grid.source)
    return {
        "measured": False,
        "kwh": kwh,
        "kg_co2": rep["co2_tonnes"] * 1000,
        "seconds": train_seconds,
        "power_w": recipe.report.power_w,
        "grid": f"{grid.gco2_per_kwh:g} gCO2eq/kWh ({country}: {grid.source})",
    }


def _shares(tokens: dict[str, Any] | None) -> tuple[dict[str, Share], dict[str, Share]]:
    """Tokens and documents per language and per source of tokens/manifest.json, most first."""
    languages: dict[str, Share] = {}
    sources: dict[str, Share] = {}
    for src, langs in (tokens or {}).get("sources", {}).items():
        for lang, c in langs.items():
            for table, key in ((languages, lang), (sources, src)):
                row = table.setdefault(key, {"tokens": 0, "documents": 0, "share": 0.0})
                row["tokens"] += c["tokens"]
                row["documents"] += c["documents"]
    total = sum(r["tokens"] for r in languages.values()) or 1
    for row in [*languages.values(), *sources.values()]:
        row["share"] = row["tokens"] / total
    return (
        dict(sorted(languages.items(), key=lambda kv: -kv[1]["tokens"])),
        dict(sorted(sources.items(), key=lambda kv: -kv[1]["tokens"])),
    )


def _model_facts(layout: RunLayout, metrics: list[dict[str, Any]]) -> ModelFacts | None:
    """The trained model of train/config.yaml: parameters and training FLOPs (None without)."""
    from bloomforge.model.flops import count_params, train_flops_per_token
    from bloomforge.typed_config import ConfigError, from_dict, load_yaml

    try:
        trained = from_dict(Recipe, load_yaml(layout.train_config))
    except (ConfigError, OSError):
        return None
    cfg, seq = trained.model, trained.data.seq_len
    params = count_params(cfg)
    steps = [m for m in metrics if m.get("kind") == "train"]
    seen = steps[-1]["tokens"] if steps else None
    per_token = train_flops_per_token(cfg, seq, trained.train.activation_checkpointing)
    return ModelFacts(
        recipe=trained,
        parameters=params.total,
        non_embedding=params.non_embedding,
        flops_per_token=per_token,
        training_tokens=seen,
        training_flops=per_token * seen if seen else None,
    )


def collect_facts(run: Path, recipe: Recipe) -> RunFacts:
    layout = RunLayout(run)
    records = {s: _json(layout.record(s)) for s in STAGES}
    records = {k: v for k, v in records.items() if v}
    tokens = _json(layout.tokens_manifest)
    languages, sources = _shares(tokens)
    metrics = read_metrics(layout.train_metrics)
    train_seconds = records.get("train", {}).get("seconds")
    return RunFacts(
        title=recipe.report.title or f"bloomforge run {run.name}",
        run=str(run),
        records=records,
        corpus=_json(layout.corpus_manifest),
        data_stats=_json(layout.data_stats),
        sampling=_json(layout.sampling),
        fertility=_json(layout.fertility_json),
        tokens=tokens,
        languages=languages,
        sources=sources,
        metrics=metrics,
        eval=_json(layout.eval_results),
        model=_model_facts(layout, metrics),
        energy=_energy(run, recipe, train_seconds),
        finetune=(
            finetune_facts(run, records.get("finetune")) if recipe.finetune is not None else None
        ),
    )


def finetune_facts(run: Path, record: dict[str, Any] | None) -> FinetuneFacts | None:
    """The finetuning mixture (datasets x languages x templates: records; tokens per language
    from the finetune stage's record), the finetune run's metrics and the rank evaluation before
    and after."""
    layout = RunLayout(run)
    manifest = _json(layout.xp3_manifest)
    if manifest is None:
        return None
    mixture: list[MixtureRow] = []
    for dataset, langs in manifest.get("counts", {}).items():
        for lang, templates in langs.items():
            written = sum(t["written"] for t in templates.values())
            row = MixtureRow(
                dataset=dataset, language=lang, templates=len(templates), records=written
            )
            mixture.append(row)
    tokens = ((record or {}).get("details") or {}).get("mixture_tokens") or {}
    return FinetuneFacts(
        mixture=mixture,
        tokens=tokens,
        metrics=read_metrics(layout.finetune_metrics),
        rank_eval=_json(layout.rank_eval),
    )


def share_rows(shares: dict[str, Share]) -> list[list[Any]]:
    """Rows of a tokens / documents / share table (languages or sources)."""
    return [
        [k, f"{r['tokens']:,}", f"{r['documents']:,}", pct(r["share"])] for k, r in shares.items()
    ]


def language_rows(facts: RunFacts) -> list[list[Any]]:
    return share_rows(facts.languages)


def model_card(facts: RunFacts) -> str:
    m, ev = facts.model, facts.eval or {}
    langs = ", ".join(facts.languages) or "unknown"
    out = [f"# Model card: {facts.title}", "", "## Model Details", ""]
    if m is not None:
        c, t, loader = m.recipe.model, m.recipe.train, m.recipe.data
        out += [
            "- **Developed with:** bloomforge (`bloomforge run`), following BigScience's BLOOM.",
            "- **Model type:** decoder-only transformer language model (BLOOM family).",
            f"- **Languages:** {langs}.",
            f"- **Architecture:** {c.n_layer} layers, hidden {c.hidden}, {c.n_head} heads, "
            f"vocabulary {c.vocab_size} (padded {c.padded_vocab_size}), positions {c.position}, "
            f"MLP {c.mlp}, embedding LayerNorm {'on' if c.embedding_layernorm else 'off'}, "
            f"{c.attention} attention, tied output embedding {c.tie_embeddings}.",
            f"- **Parameters:** {m.parameters:,} ({m.non_embedding:,} non-embedding).",
            f"- **Objective:** next-token cross-entropy, sequence length {loader.seq_len}.",
            f"- **Training compute:** {m.flops_per_token:,} FLOPs per token (Megatron "
            "matmul count, `bloomforge.model.flops`)"
            + (
                f"; {m.training_tokens:,} tokens -> {m.training_flops:.3g} FLOPs."
                if m.training_flops
                else "."
            ),
            "",
            "### Hyper-parameters",
            "",
            md_table(
                ["key", "value"],
                [
                    ["lr (peak -> min)", f"{t.lr:g} -> {t.min_lr:g} ({t.schedule})"],
                    ["warmup / decay tokens", f"{t.warmup_tokens:,} / {t.decay_tokens:,}"],
                    ["global / micro batch", f"{t.global_batch_size} / {t.micro_batch_size}"],
                    ["batch rampup", t.rampup_batch_size or "none"],
                    ["AdamW betas, eps", f"{t.beta1}, {t.beta2}, {t.eps:g}"],
                    ["weight decay, grad clip", f"{t.weight_decay}, {t.clip_grad}"],
                    ["precision", t.precision],
                    ["language mixing", f"by {loader.group_by}, alpha {loader.alpha}"],
                ],
            ),
        ]
    out += [
        "",
        "## Uses",
        "",
        "- **Intended use:** research and teaching: studying how data preparation, tokenizer, "
        "architecture and training choices show up in a small multilingual model; a smoke test "
        "of a training pipeline before scaling it up.",
        "- **Out of scope:** any use where its text is taken as true or safe: it is a small model "
        "trained briefly; it produces fluent-looking but unreliable text, is not instruction-"
        "tuned, and was not evaluated for harms. Not for decisions about people, medical, legal "
        "or financial advice, or content presented as written by a human.",
        "",
        "## Bias, Risks, and Limitations",
        "",
        "- It reproduces the style and content of its training text, including its biases and "
        "errors; languages with less training text are modelled worse (see the perplexity table).",
        "- Personal data: the data stage redacts e-mails, IPs, keys and user handles by pattern "
        "(as BigScience did); patterns miss things, so assume some personal data remains.",
        "",
        "## Training Data",
        "",
        "See DATA_CARD.md. Tokens per language (after the held-out split):",
        "",
        md_table(["language", "tokens", "documents", "share"], language_rows(facts)),
        "",
        "## Evaluation",
        "",
    ]
    ppl = {k: v for k, v in (ev.get("perplexity") or {}).items() if not k.startswith("_")}
    if ppl:
        out += [
            "Held-out text per language (bits per byte compares across tokenizers):",
            "",
            md_table(
                ["language", "documents", "token ppl", "bits per byte"],
                [
                    [k, v["documents"], f"{v['token_perplexity']:.2f}", f"{v['bits_per_byte']:.3f}"]
                    for k, v in ppl.items()
                ],
            ),
        ]
    for task, res in (ev.get("tasks") or {}).items():
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in res["all"].items() if k != "n" and "stderr" not in k
        )
        out.append(f"- {task}: {metrics} (n={int(res['all']['n'])})")
    for task, entry in (ev.get("prompted") or {}).items():
        for lang, m in entry["summary"].items():
            out.append(
                f"- {task} {lang}: median accuracy over {m['n_prompts']} prompts "
                f"{m['median']:.4f} (min {m['min']:.4f}, max {m['max']:.4f})"
            )
    e = facts.energy
    out += ["", "## Environmental Impact", ""]
    if e is None:
        out.append("No training time recorded.")
    elif e["measured"]:
        out.append(
            f"Measured by codecarbon: {e['kwh']:.4g} kWh, {e['kg_co2']:.4g} kg CO2eq "
            f"over {e['seconds']:.0f} s of training."
        )
    else:
        out.append(
            f"Estimated (codecarbon not installed): {e['seconds']:.0f} s of training x "
            f"{e['power_w']:g} W assumed draw = {e['kwh']:.4g} kWh; x {e['grid']} = "
            f"{e['kg_co2']:.4g} kg CO2eq."
        )
    return "\n".join(out) + "\n"


def data_card(facts: RunFacts) -> str:
    out = [f"# Data card: {facts.title}", "", "## Sources", ""]
    corpus = facts.corpus
    if corpus:
        out += [
            f"Gathered on this machine: {corpus['catalogues_found']} message catalogues under "
            f"`{corpus['locale_dir']}` (GNU gettext .mo; each program's message domain is a "
            "source; the language is the catalogue's locale folder; the English originals "
            "(msgids) are the `en` text) and the Python standard library as code"
            + (f" (`{corpus['code_dir']}`)." if corpus.get("code_dir") else " (none)."),
            "Licences: each catalogue is under its program's licence (mostly GPL/LGPL); the "
            "Python standard library is under the PSF licence.",
        ]
        out += [f"- Note: {n}" for n in corpus["notes"]]
        if corpus["skipped"]:
            out.append(
                "- Catalogues skipped: "
                + ", ".join(f"{n} {k}" for k, n in corpus["skipped"].items())
            )
        out.append("")
    if facts.sources:
        rows = share_rows(facts.sources)
        out += [md_table(["source", "tokens", "documents", "share"], rows[:40]), ""]
        if len(rows) > 40:
            out += [f"({len(rows) - 40} smaller sources not shown)", ""]
    out += [
        "## Languages",
        "",
        md_table(["language", "tokens", "documents", "share"], language_rows(facts)),
        "",
    ]
    out += ["## Filtering, deduplication, PII", ""]
    stats = facts.data_stats
    if stats is None:
        out.append("No data/stats.json in this run (the documents were prepared elsewhere).")
    else:
        from bloomforge.data.report import data_card_markdown

        out.append(data_card_markdown(stats, title=None, level=3))
    held = (facts.records.get("tokens") or {}).get("details", {}).get("heldout")
    if held:
        out += [
            "",
            "## Held out",
            "",
            "Documents held out per language (perplexity, prompts): "
            + ", ".join(f"{k} {v}" for k, v in held.items()),
        ]
    return "\n".join(out) + "\n"
