"""The training stage's one entry point: a recipe -> a trained (or resumed, or stopped) run.

In: a `Recipe` (`out` is the run folder), whether to resume (None: resume when the run folder
already holds checkpoints, as `bloomforge run` and `ablate` do; `bloomforge train` passes its
`--resume` flag), and the process's place under torchrun. Out: a `TrainResult`: `Trainer.fit`'s
summary (step, tokens, skipped, checkpoint, and `stopped`, the reason the run stopped early
and saved, or None) and the run's loader (its groups and their token counts).
`bloomforge train` / `finetune`, `bloomforge run`'s train and finetune stages and `ablate` call
`train`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bloomforge.recipe import Recipe


@dataclass
class TrainResult:
    summary: dict[str, Any]
    loader: Any  # data.loader.MixtureLoader or mtf.loader.MTFLoader

    @property
    def stopped(self) -> str | None:
        """Why the run stopped before train.max_tokens (it saved; resume continues), or None."""
        return self.summary["stopped"]


def train(
    recipe: Recipe, resume: bool | None = None, rank: int = 0, world_size: int = 1
) -> TrainResult:
    """Build a `Trainer` for `recipe` (resuming when asked, or when `resume` is None and the
    run folder has checkpoints) and train it to `train.max_tokens` or a stop request."""
    from bloomforge.checkpoint import Checkpointer
    from bloomforge.training.loop import Trainer

    if resume is None:
        resume = bool(recipe.out and Checkpointer(recipe.out).folders())
    trainer = Trainer(recipe, resume=resume, rank=rank, world_size=world_size)
    return TrainResult(trainer.fit(), trainer.loader)
