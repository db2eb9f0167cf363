"""Run zero-shot tasks and per-language perplexity with one `Scorer`; results as a dict/table.

In: a `Scorer`, `TaskSpec`s + the data folder (+ limit), and/or perplexity inputs
`LANG=PATH` (txt: one document per line; jsonl: a `text` field; read by documents.inputs).
Out: `{"tasks": {task: {"subsets": {subset: metrics}, "all": metrics}}, "perplexity": {lang:
metrics}}` where metrics hold each value, its `<metric>_stderr` and `n`. All requests of all
tasks go to the scorer as one list, so it can sort and batch them together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloomforge.errors import BloomforgeError
from bloomforge.evaluation import metrics as M
from bloomforge.evaluation.scoring import Progress, Scorer
from bloomforge.evaluation.tasks import Example, TaskSpec
from bloomforge.tables import decimals


def task_requests(examples: Sequence[Example]) -> list[tuple[str, str]]:
    return [
        (ctx, cont)
        for ex in examples
        for ctx, cont in zip(ex.contexts, ex.continuations, strict=True)
    ]


def score_examples(
    spec: TaskSpec, examples: Sequence[Example], results: Sequence[tuple[float, bool]]
) -> dict[str, float]:
    """Metrics (+ stderr, n) of one subset from the scorer's results for its requests."""
    per: dict[str, list[float]] = {m: [] for m in spec.metrics}
    lls: list[float] = []
    at = 0
    for ex in examples:
        part = results[at : at + len(ex.contexts)]
        at += len(ex.contexts)
        if spec.kind == "loglikelihood":
            ll, greedy = part[0]
            lls.append(ll)
            if "acc" in per:
                per["acc"].append(float(greedy))
            continue
        scores = M.choice_metrics([ll for ll, _ in part], ex.choices, ex.gold)
        for m in per:
            per[m].append(scores[m])
    out: dict[str, float] = {"n": len(examples)}
    for m, xs in per.items():
        if m == "perplexity":
            out[m], out[f"{m}_stderr"] = M.perplexity(lls), M.perplexity_stderr(lls)
        else:
            out[m], out[f"{m}_stderr"] = M.mean(xs), M.mean_stderr(xs)
    return out


def group_metrics(subsets: dict[str, dict[str, float]], spec: TaskSpec) -> dict[str, float]:
    """lm-eval's group aggregate: size-weighted mean, pooled stderr (perplexity: none)."""
    sizes = [int(s["n"]) for s in subsets.values()]
    out: dict[str, float] = {"n": sum(sizes)}
    for m in spec.metrics:
        vals = [s[m] for s in subsets.values()]
        out[m] = sum(v * n for v, n in zip(vals, sizes, strict=True)) / sum(sizes)
        errs = [s[f"{m}_stderr"] for s in subsets.values()]
        if m == "perplexity" or len(sizes) == 1:
            out[f"{m}_stderr"] = errs[0] if len(sizes) == 1 else float("nan")
        else:
            out[f"{m}_stderr"] = M.pooled_stderr(errs, sizes)
    return out


def run_tasks(
    scorer: Scorer,
    specs: Sequence[TaskSpec],
    data_dir: Path,
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    loaded = [(spec, spec.read(data_dir, limit)) for spec in specs]
    pairs: list[tuple[str, str]] = []
    for spec, subsets in loaded:
        for examples in subsets.values():
            pairs += task_requests(examples) if spec.kind != "generate" else []
    results = scorer.loglikelihood(pairs, progress)
    out: dict[str, Any] = {}
    at = 0
    for spec, subsets in loaded:
        scored = {}
        for subset, examples in subsets.items():
            if spec.kind == "generate":
                scored[subset] = score_generations(scorer, spec, examples, progress)
                continue
            n = sum(len(ex.contexts) for ex in examples)
            scored[subset] = score_examples(spec, examples, results[at : at + n])
            at += n
        out[spec.name] = {"subsets": scored, "all": group_metrics(scored, spec)}
    return out


def score_generations(
    scorer: Scorer, spec: TaskSpec, examples: Sequence[Example], progress: Progress | None
) -> dict[str, float]:
    """Greedy generations cut at `until`; exact_match = generation == target (lm-eval's
    exact_match with its default options and the take_first filter)."""
    texts = scorer.generate_until(
        [ex.contexts[0] for ex in examples], [list(spec.until)] * len(examples), spec.max_new_tokens
    )
    if progress is not None:
        progress(len(examples))
    hits = [float(t == ex.continuations[0]) for t, ex in zip(texts, examples, strict=True)]
    return {
        "n": len(examples),
        "exact_match": M.mean(hits),
        "exact_match_stderr": M.mean_stderr(hits),
    }


def count_requests(specs: Sequence[TaskSpec], data_dir: Path, limit: int | None) -> int:
    return sum(
        len(ex.contexts)
        for spec in specs
        for examples in spec.read(data_dir, limit).values()
        for ex in examples
    )


@dataclass
class PerplexityTexts:
    """The documents to score per language, and the records skipped while reading them."""

    texts: dict[str, list[str]]
    skipped: dict[str, int]


def read_perplexity_texts(inputs: Sequence[str]) -> PerplexityTexts:
    """Documents per language of `LANG=PATH` inputs. An input with no document to score (an
    empty file, only blank lines) is an error naming it: a table without its row would look
    like a result. Cheap: the CLI calls it before loading the checkpoint."""
    from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents

    texts: dict[str, list[str]] = {}
    stats = ReadStats()
    for spec in inputs:
        files = parse_inputs([spec])
        own = ReadStats()
        for doc in read_documents(files, own):
            texts.setdefault(doc.language, []).append(doc.text)
        stats.merge(own)
        if own.documents == 0:
            names = ", ".join(str(f.path) for f in files[:3]) + (", ..." if len(files) > 3 else "")
            skipped = ", ".join(f"{n} {why}" for why, n in own.skipped.most_common())
            why = f"every line skipped: {skipped}" if skipped else "the input is empty"
            raise BloomforgeError(f"{names}: no documents to score for perplexity ({why})")
    return PerplexityTexts(texts, dict(stats.skipped))


def run_perplexity(
    scorer: Scorer, inputs: Sequence[str] | PerplexityTexts, progress: Progress | None = None
) -> dict[str, Any]:
    """Per language: token/word/byte perplexity and bits per byte over all its documents."""
    read = inputs if isinstance(inputs, PerplexityTexts) else read_perplexity_texts(inputs)
    texts = read.texts
    out: dict[str, Any] = {}
    for lang, docs in texts.items():
        scored = scorer.loglikelihood_rolling(docs, progress)
        total = sum(ll for ll, _ in scored)
        tokens = sum(n for _, n in scored)
        nbytes = sum(len(d.encode("utf-8")) for d in docs)
        words = sum(len(re.split(r"\s+", d)) for d in docs)  # lm-eval wikitext's word count
        out[lang] = {
            **M.rolling_metrics(total, tokens, nbytes, words),
            "documents": len(docs),
            "tokens": tokens,
            "bytes": nbytes,
            "words": words,
        }
    if read.skipped:
        out["_skipped"] = read.skipped
    return out


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table: one row per task/subset/metric, value ± stderr, n."""

    def _num(x: float) -> str:  # 0.1235; 1.2346e+06 from a million up (a perplexity); NaN: ''
        return decimals(x, 4, sci_from=1e6)

    rows = [("task", "subset", "metric", "value", "stderr", "n")]
    for task, res in results.get("tasks", {}).items():
        subsets = res["subsets"]
        keys = [*subsets, "all"] if len(subsets) > 1 else list(subsets)
        for subset in keys:
            m = res["all"] if subset == "all" else subsets[subset]
            for name in [k for k in m if k != "n" and not k.endswith("_stderr")]:
                err = m.get(f"{name}_stderr", float("nan"))
                rows.append((task, subset, name, _num(m[name]), _num(err), str(int(m["n"]))))
    for lang, m in results.get("perplexity", {}).items():
        if lang.startswith("_"):
            continue
        for name in ("token_perplexity", "byte_perplexity", "bits_per_byte"):
            rows.append(("perplexity", lang, name, _num(m[name]), "", str(m["documents"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
