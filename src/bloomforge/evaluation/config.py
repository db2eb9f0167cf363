"""The recipe's `eval` section: what a model is evaluated on, wherever it is evaluated.

In: the mapping under `eval:` (and under `finetune.eval:`). Out: an `EvalConfig`, read by
`bloomforge.evaluation.run.evaluate` (the function `bloomforge eval` calls), by the run's eval
stage, by the finetune stage's rank evaluation and by in-loop evaluation during training
(`train.eval_tasks_every`). `generate` is the run's sample generations per language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from bloomforge.typed_config import bounded


@dataclass
class GenerateConfig:
    """Sample continuations per language in the run's eval stage (`bloomforge generate`'s)."""

    prompts: dict[str, list[str]] = field(default_factory=dict)  # LANG: prompts; empty: heldout/
    prompts_per_language: int = bounded(2, ge=0)
    prompt_words: int = bounded(4, ge=1)  # a prompt taken from held-out text: its first words
    max_new_tokens: int = bounded(24, ge=1)
    temperature: float = bounded(0.7, ge=0)
    top_p: float = bounded(0.9, gt=0, le=1)
    seed: int = 1


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # zero-shot tasks (needs `data`)
    data: str | None = None  # folder with the task files (xcopa/, copa/, ...)
    limit: int | None = bounded(None, ge=1)  # first N examples per task and language
    batch_size: int = bounded(8, ge=1)
    # promptsource templates (files or folders): score `tasks` under every prompt and report
    # the median over prompts, as BLOOMZ was evaluated (bloomforge.evaluation.prompted)
    prompts: list[str] = field(default_factory=list)
    # LANG: PATH texts for perplexity / bits per byte; empty in a run: its heldout/ text
    perplexity: dict[str, str] = field(default_factory=dict)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    RENAMED: ClassVar[dict[str, str]] = {
        k: f"it is 'eval.generate.{k}'"
        for k in ("prompts_per_language", "prompt_words", "max_new_tokens", "temperature", "top_p")
    }

    def __post_init__(self) -> None:
        if self.tasks and self.data is None:
            raise ValueError("key 'tasks': needs 'data' (the folder with xcopa/, copa/, ...)")
        if self.prompts and not self.tasks:
            raise ValueError("key 'prompts': needs 'tasks' (the records to render)")
