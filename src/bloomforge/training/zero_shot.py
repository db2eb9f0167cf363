"""Zero-shot tasks inside a training run: the recipe's `eval` tasks every train.eval_tasks_every
steps, logged beside the validation loss.

In: the trainer's model (one process, or FSDP data parallel), its tokenizer and the recipe's
`eval` section (tasks, data, limit, batch_size; prompts for BLOOMZ-style rank evaluation under
every promptsource template). Out: flat metrics for metrics.jsonl and TensorBoard (kind
`zero_shot`): `task/acc` and `task/<lang>/acc` (plain tasks, lm-eval's prompts), or
`task/<lang>/median` with `min` / `max` over prompts.

Every rank scores the same requests in the same order with a fixed batch size, so the FSDP
all-gathers inside each forward pair up and no rank waits on another: every rank takes part or
none does (BLOOM lost days to an evaluation that hung on some ranks only). The root module's
weights (the tied embedding the scorer's output projection reads) are gathered for the whole
evaluation and released after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bloomforge.errors import BloomforgeError
from bloomforge.recipe import Recipe


def check_supported(recipe: Recipe) -> None:
    """Refuse at start-up what would fail at the first in-loop evaluation."""
    if not recipe.train.eval_tasks_every:
        return
    ev = recipe.eval
    if not ev.tasks:
        raise BloomforgeError("train.eval_tasks_every is set but eval.tasks is empty")
    if not ev.data or not Path(ev.data).is_dir():
        raise BloomforgeError(
            f"train.eval_tasks_every: eval.data={ev.data} is not a folder of task files"
        )
    if recipe.parallel.tp > 1 or recipe.parallel.pp > 1:
        raise BloomforgeError(
            "train.eval_tasks_every is supported with data parallelism only (parallel.tp = "
            "parallel.pp = 1); evaluate checkpoints with `bloomforge eval` instead"
        )
    from bloomforge.evaluation.tasks import get_task

    for name in ev.tasks:
        get_task(name)
    if ev.prompts:
        from bloomforge.evaluation.prompted import load_prompts

        load_prompts(ev.prompts)


def zero_shot(model: nn.Module, tokenizer, device: torch.device, recipe: Recipe) -> dict[str, Any]:
    """Score the recipe's eval tasks with the model as it is now; flat metrics."""
    from bloomforge.evaluation.run import evaluate, flat_metrics
    from bloomforge.evaluation.scoring import Scorer

    gathered = hasattr(model, "unshard")  # FSDP2: the root's weights, for the output projection
    if gathered:
        model.unshard()
    was_training = model.training
    try:
        scorer = Scorer(model, tokenizer, device, recipe.eval.batch_size)
        return flat_metrics(evaluate(scorer, recipe.eval))
    finally:
        model.train(was_training)
        if gathered:
            model.reshard()
