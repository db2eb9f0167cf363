"""The evaluation stage's one entry point: a model and an `EvalConfig` -> results.

In: a model to score (`load_scorer`: a bloomforge checkpoint, a run folder or a local HF BLOOM
folder; or a `Scorer` over a model already in memory, as training's in-loop evaluation and
`ablate` have) and the recipe's `eval` section. Out: `evaluate`'s dict:
  "tasks"       zero-shot tasks (lm-eval's templates and metrics), when `prompts` is empty
  "prompted"    the same tasks under every promptsource prompt (median over prompts, BLOOMZ)
  "perplexity"  per language, when perplexity texts are given
`bloomforge eval`, `bloomforge run`'s eval and finetune stages, `ablate` and
`train.eval_tasks_every` all call `evaluate`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bloomforge.errors import BloomforgeError
from bloomforge.evaluation.config import EvalConfig
from bloomforge.evaluation.evaluate import (
    PerplexityTexts,
    count_requests,
    run_perplexity,
    run_tasks,
)
from bloomforge.evaluation.scoring import Progress, Scorer
from bloomforge.evaluation.tasks import get_task


def load_scorer(
    path: str | Path,
    device: torch.device | str = "cpu",
    batch_size: int | str = "auto",
    dtype: torch.dtype = torch.float32,
    **scorer_options: Any,
) -> Scorer:
    """A `Scorer` over the model at `path` (checkpoint, run folder or HF folder), its tokenizer
    checked against the model's vocabulary. `scorer_options`: max_length, share_context,
    normalize_over."""
    from bloomforge.interop.hf import load_any

    model, tokenizer, _ = load_any(path, device, dtype)
    return Scorer(model, tokenizer, device, batch_size, **scorer_options)


def evaluate(
    scorer: Scorer,
    cfg: EvalConfig,
    perplexity: Sequence[str] | PerplexityTexts = (),
    progress: Callable[[str, int | None], Progress] | None = None,
) -> dict[str, Any]:
    """Score `cfg.tasks` (under every prompt of `cfg.prompts` when given) and the perplexity
    texts (`LANG=PATH` inputs, or texts already read), without gradients.

    `progress(what, total)` returns the callback advanced by each scored request."""
    specs = [get_task(name) for name in cfg.tasks]
    if specs and cfg.data is None:
        raise BloomforgeError("eval.tasks needs eval.data (the folder with xcopa/, copa/, ...)")
    results: dict[str, Any] = {}
    with torch.no_grad():
        if specs and cfg.prompts:
            from bloomforge.evaluation.prompted import load_prompts, run_prompted

            prompts = load_prompts(cfg.prompts)
            bar = progress("scoring prompted tasks", None) if progress else None
            results["prompted"] = run_prompted(
                scorer, specs, Path(cfg.data), prompts, cfg.limit, bar
            )
        elif specs:
            data = Path(cfg.data)
            bar = None
            if progress:
                bar = progress("scoring tasks", count_requests(specs, data, cfg.limit))
            results["tasks"] = run_tasks(scorer, specs, data, cfg.limit, bar)
        if perplexity:
            bar = progress("perplexity windows", None) if progress else None
            results["perplexity"] = run_perplexity(scorer, perplexity, bar)
    return results


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """`evaluate`'s task results as flat `task[/lang]/metric` numbers (training logs them):
    a plain task's first metric (acc when it has one), overall and per subset; a prompted
    task's median/min/max over prompts per language."""
    out: dict[str, Any] = {}
    for task, entry in results.get("prompted", {}).items():
        for lang, summary in entry["summary"].items():
            for k, v in summary.items():
                if k != "n_prompts":
                    out[f"{task}/{lang}/{k}"] = v
    for task, r in results.get("tasks", {}).items():
        metric = "acc" if "acc" in r["all"] else next(k for k in r["all"] if k != "n")
        out[f"{task}/{metric}"] = r["all"][metric]
        if len(r["subsets"]) > 1:
            for lang, m in r["subsets"].items():
                out[f"{task}/{lang}/{metric}"] = m[metric]
    return out
