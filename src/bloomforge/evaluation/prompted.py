"""Rank evaluation with prompts, as BLOOMZ was evaluated: a task under every template of a
promptsource file, each prompt's accuracy, and the median and spread over prompts.

In: a `Scorer`, the tasks' specs (their files per language under the data folder, e.g. XCOPA's
11 languages), promptsource template roots (`--prompts`, e.g. the English COPA prompts for
XCOPA, as BLOOMZ evaluated XCOPA) and a limit. Out: `{task: {"prompts": {template name:
{language: metrics}}, "summary": {language: {median, min, max, n_prompts}}, "skipped": ...}}`.

For each record and template: the template renders (input, target) and its `answer_choices`
gives the choices; the gold choice is the one equal to the rendered target; each choice is
scored as the continuation " " + choice after the input (the delimiter a finetuned model saw:
targets were trained with a leading space, bloomforge.mtf.loader) by the same `Scorer` as
`bloomforge eval`, so acc and acc_norm are lm-eval's. A template that does not render a record
(COPA's "effect"-only prompts on a "cause" question), or has no `answer_choices`, skips it and
counts why. The median over prompts is what the BLOOMZ paper reports.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bloomforge.errors import BloomforgeError
from bloomforge.evaluation.evaluate import score_examples, task_requests
from bloomforge.evaluation.scoring import Progress, Scorer
from bloomforge.evaluation.tasks import Example, TaskSpec, read_records
from bloomforge.mtf.templates import RenderSkip, Template, find_template_files, load_template_file

DELIMITER = " "
_METRICS = TaskSpec(name="prompted", files={}, choices="choices", metrics=("acc", "acc_norm"))


def load_prompts(roots: Sequence[str | Path]) -> list[Template]:
    templates = [t for f in find_template_files(list(roots)) for t in load_template_file(f)]
    if not templates:
        raise BloomforgeError(f"--prompts {', '.join(map(str, roots))}: no templates.yaml there")
    return templates


def prompted_example(template: Template, record: dict[str, Any], seed: int = 0) -> Example:
    """The rank-classification example of one record under one template (RenderSkip if the
    template does not apply to it)."""
    parts = template.apply(record, seed)
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise RenderSkip("does not render as input ||| target")
    choices = template.answer_choices_list(record, random.Random(f"{seed}:{template.id}"))
    if not choices:
        raise RenderSkip("no answer_choices")
    if parts[1] not in choices:
        raise RenderSkip("target is not one of the answer choices")
    conts = [DELIMITER + c for c in choices]
    return Example([parts[0]] * len(choices), conts, choices, choices.index(parts[1]))


def run_prompted(
    scorer: Scorer,
    specs: Sequence[TaskSpec],
    data_dir: Path,
    prompts: Sequence[Template],
    limit: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    plan: list[tuple[str, str, Template, list[Example]]] = []
    skipped: dict[str, Counter] = {}
    for spec in specs:
        for subset, name in spec.files.items():
            records = list(read_records(data_dir / name, limit))
            for t in prompts:
                examples = []
                for record, _ in records:
                    try:
                        examples.append(prompted_example(t, record))
                    except RenderSkip as e:
                        skipped.setdefault(spec.name, Counter())[f"{t.name}: {e}"] += 1
                if examples:
                    plan.append((spec.name, subset, t, examples))
    pairs = [p for *_, examples in plan for p in task_requests(examples)]
    results = scorer.loglikelihood(pairs, progress)
    out: dict[str, Any] = {}
    at = 0
    for task, subset, t, examples in plan:
        n = sum(len(ex.contexts) for ex in examples)
        metrics = score_examples(_METRICS, examples, results[at : at + n])
        at += n
        entry = out.setdefault(task, {"prompts": {}, "summary": {}, "skipped": {}})
        entry["prompts"].setdefault(t.name, {})[subset] = metrics
    for task, entry in out.items():
        subsets = sorted({s for per in entry["prompts"].values() for s in per})
        for subset in subsets:
            accs = [per[subset]["acc"] for per in entry["prompts"].values() if subset in per]
            entry["summary"][subset] = {
                "median": statistics.median(accs),
                "min": min(accs),
                "max": max(accs),
                "n_prompts": len(accs),
            }
        entry["skipped"] = dict(skipped.get(task, {}))
    if not out:
        raise BloomforgeError("--prompts: no template rendered any record of the tasks")
    return out


def format_prompted(results: dict[str, Any]) -> str:
    """Per task and language: each prompt's accuracy, then the median and spread."""
    lines = []
    for task, entry in results.items():
        names = list(entry["prompts"])
        width = max(len(n) for n in [*names, "median over prompts"])
        subsets = list(entry["summary"])
        lines.append(f"{task}: accuracy per prompt")
        lines.append("  ".join(["prompt".ljust(width), *(s.rjust(6) for s in subsets)]))
        for name in names:
            per = entry["prompts"][name]
            cells = [f"{per[s]['acc']:.4f}" if s in per else "" for s in subsets]
            lines.append("  ".join([name.ljust(width), *(c.rjust(6) for c in cells)]))
        for key in ("median", "min", "max"):
            label = "median over prompts" if key == "median" else key
            cells = [f"{entry['summary'][s][key]:.4f}" for s in subsets]
            lines.append("  ".join([label.ljust(width), *(c.rjust(6) for c in cells)]))
    return "\n".join(lines)
