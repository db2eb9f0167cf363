"""What a run folder says about its data and model, and the two cards written from it.

In: a run folder (corpus/manifest.json, data/stats.json, tokenizer/*.json, tokens/manifest.json,
train/ (config.yaml, metrics.jsonl, emissions.csv), eval/results.json, .stages/*.json) and the
run recipe. Out: `collect_facts` -> one dict (every part optional: what is missing is None), and
`model_card` / `data_card` -> markdown, laid out like BigScience's BLOOM model card (Model
Details, Uses, Bias/Risks/Limitations, Training Data, Evaluation, Environmental Impact). The data
card's filtering part is `bloomforge.data.report.data_card_markdown`, the one data card of
`bloomforge data report` too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from bloomforge.pipeline.config import STAGES, RunRecipe
from bloomforge.tables import md_table
from bloomforge.training.metrics import read_metrics


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _energy(run: Path, recipe: RunRecipe, train_seconds: float | None) -> dict[str, Any] | None:
    """codecarbon's measured emissions.csv (summed over its rows), else an estimate."""
    from bloomforge.science.carbon import carbon_report, energy_from_mwh, grid_intensity

    csv_file = run / "train" / "emissions.csv"
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


def collect_facts(run: Path, recipe: RunRecipe) -> dict[str, Any]:
    from bloomforge.model.flops import count_params, train_flops_per_token
    from bloomforge.recipe import Recipe
    from bloomforge.typed_config import ConfigError, from_dict, load_yaml

    records = {s: _json(run / ".stages" / f"{s}.json") for s in STAGES}
    records = {k: v for k, v in records.items() if v}
    tokens = _json(run / "tokens" / "manifest.json")
    languages: dict[str, dict[str, int]] = {}
    sources: dict[str, dict[str, int]] = {}
    for src, langs in (tokens or {}).get("sources", {}).items():
        for lang, c in langs.items():
            for table, key in ((languages, lang), (sources, src)):
                row = table.setdefault(key, {"tokens": 0, "documents": 0})
                row["tokens"] += c["tokens"]
                row["documents"] += c["documents"]
    total = sum(r["tokens"] for r in languages.values()) or 1
    for row in [*languages.values(), *sources.values()]:
        row["share"] = row["tokens"] / total
    facts: dict[str, Any] = {
        "title": recipe.report.title or f"bloomforge run {run.name}",
        "run": str(run),
        "records": records,
        "corpus": _json(run / "corpus" / "manifest.json"),
        "data_stats": _json(run / "data" / "stats.json"),
        "sampling": _json(run / "tokenizer" / "sampling.json"),
        "fertility": _json(run / "tokenizer" / "fertility.json"),
        "tokens": tokens,
        "languages": dict(sorted(languages.items(), key=lambda kv: -kv[1]["tokens"])),
        "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1]["tokens"])),
        "metrics": read_metrics(run / "train" / "metrics.jsonl"),
        "eval": _json(run / "eval" / "results.json"),
        "model": None,
    }
    try:
        trained = from_dict(Recipe, load_yaml(run / "train" / "config.yaml"))
    except (ConfigError, OSError):
        trained = None
    if trained is not None:
        cfg, seq = trained.model, trained.data.seq_len
        params = count_params(cfg)
        steps = [m for m in facts["metrics"] if m.get("kind") == "train"]
        seen = steps[-1]["tokens"] if steps else None
        per_token = train_flops_per_token(cfg, seq, trained.train.activation_checkpointing)
        facts["model"] = {
            "config": cfg,
            "train": trained.train,
            "loader": trained.data,
            "parameters": params.total,
            "non_embedding": params.non_embedding,
            "flops_per_token": per_token,
            "training_tokens": seen,
            "training_flops": per_token * seen if seen else None,
        }
    train_seconds = records.get("train", {}).get("seconds")
    facts["energy"] = _energy(run, recipe, train_seconds)
    if recipe.finetune is not None:
        facts["finetune"] = finetune_facts(run, records.get("finetune"))
    else:
        facts["finetune"] = None
    return facts


def finetune_facts(run: Path, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The finetuning mixture (datasets x languages x templates: records; tokens per language
    from the finetune stage's record), the finetune run's metrics and the rank evaluation before
    and after."""
    manifest = _json(run / "xp3" / "manifest.json")
    if manifest is None:
        return None
    mixture = []
    for dataset, langs in manifest.get("counts", {}).items():
        for lang, templates in langs.items():
            written = sum(t["written"] for t in templates.values())
            mixture.append(
                {
                    "dataset": dataset,
                    "language": lang,
                    "templates": len(templates),
                    "records": written,
                }
            )
    tokens = ((record or {}).get("details") or {}).get("mixture_tokens") or {}
    return {
        "mixture": mixture,
        "tokens": tokens,
        "metrics": read_metrics(run / "finetune" / "metrics.jsonl"),
        "rank_eval": _json(run / "finetune" / "rank_eval.json"),
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def language_rows(facts: dict[str, Any]) -> list[list[Any]]:
    return [
        [lang, f"{r['tokens']:,}", f"{r['documents']:,}", _pct(r["share"])]
        for lang, r in facts["languages"].items()
    ]


def model_card(facts: dict[str, Any]) -> str:
    m, ev = facts["model"], facts["eval"] or {}
    langs = ", ".join(facts["languages"]) or "unknown"
    out = [f"# Model card: {facts['title']}", "", "## Model Details", ""]
    if m is not None:
        c, t = m["config"], m["train"]
        out += [
            "- **Developed with:** bloomforge (`bloomforge run`), following BigScience's BLOOM.",
            "- **Model type:** decoder-only transformer language model (BLOOM family).",
            f"- **Languages:** {langs}.",
            f"- **Architecture:** {c.n_layer} layers, hidden {c.hidden}, {c.n_head} heads, "
            f"vocabulary {c.vocab_size} (padded {c.padded_vocab_size}), positions {c.position}, "
            f"MLP {c.mlp}, embedding LayerNorm {'on' if c.embedding_layernorm else 'off'}, "
            f"{c.attention} attention, tied output embedding {c.tie_embeddings}.",
            f"- **Parameters:** {m['parameters']:,} ({m['non_embedding']:,} non-embedding).",
            f"- **Objective:** next-token cross-entropy, sequence length {m['loader'].seq_len}.",
            f"- **Training compute:** {m['flops_per_token']:,} FLOPs per token (Megatron "
            "matmul count, `bloomforge.model.flops`)"
            + (
                f"; {m['training_tokens']:,} tokens -> {m['training_flops']:.3g} FLOPs."
                if m["training_flops"]
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
                    ["language mixing", f"by {m['loader'].group_by}, alpha {m['loader'].alpha}"],
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
    e = facts["energy"]
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


def data_card(facts: dict[str, Any]) -> str:
    out = [f"# Data card: {facts['title']}", "", "## Sources", ""]
    corpus = facts["corpus"]
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
    if facts["sources"]:
        rows = [
            [s, f"{r['tokens']:,}", f"{r['documents']:,}", _pct(r["share"])]
            for s, r in facts["sources"].items()
        ]
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
    stats = facts["data_stats"]
    if stats is None:
        out.append("No data/stats.json in this run (the documents were prepared elsewhere).")
    else:
        from bloomforge.data.report import data_card_markdown

        out.append(data_card_markdown(stats, title=None, level=3))
    held = (facts["records"].get("tokens") or {}).get("details", {}).get("heldout")
    if held:
        out += [
            "",
            "## Held out",
            "",
            "Documents held out per language (perplexity, prompts): "
            + ", ".join(f"{k} {v}" for k, v in held.items()),
        ]
    return "\n".join(out) + "\n"
