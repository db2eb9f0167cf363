"""The stages of `bloomforge run`, the sections each reads, the `report` section, the demo recipes.

In: nothing (constants) or a stage name a user typed. Out: `STAGES` in order, `STAGE_SECTIONS`
(which sections of the one recipe, `bloomforge.recipe.Recipe`, each stage's fingerprint
hashes), `stage_name` (alias -> stage, or a one-line error), `ReportConfig`, and the embedded
demo recipes (`demo_recipe_text`, `demo_recipe_data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from bloomforge.typed_config import bounded

STAGES = (
    "corpus",
    "data",
    "tokenizer",
    "tokens",
    "train",
    "mtf",
    "finetune",
    "eval",
    "export",
    "report",
)
# Names a user may type for a stage (the CLI command names of the stages).
ALIASES = {
    "prepare": "data",
    "tokenize": "tokens",
    "hf": "export",
    "evaluate": "eval",
    "xp3": "mtf",
}

# The recipe sections each stage reads: its fingerprint hashes exactly these.
STAGE_SECTIONS = {
    "corpus": ("corpus",),
    "data": ("prepare",),
    "tokenizer": ("tokenizer",),
    "tokens": ("tokens",),
    "train": ("model", "data", "train", "parallel", "init", "seed"),
    "mtf": ("mtf",),
    "finetune": ("finetune", "seed"),
    "eval": ("eval",),
    "export": ("export",),
    "report": ("report",),
}


@dataclass
class ReportConfig:
    title: str | None = None
    # Without codecarbon's measured emissions.csv the report estimates energy as training time
    # x this average draw of the machine (W); set it to what your machine really draws.
    power_w: float = bounded(100.0, gt=0)
    grid_country: str | None = None  # None: train.carbon_country


def stage_name(name: str) -> str:
    """A stage name or alias -> the stage; a one-line error naming the valid ones."""
    name = ALIASES.get(name, name)
    if name not in STAGES:
        import difflib

        near = difflib.get_close_matches(name, [*STAGES, *ALIASES], n=1, cutoff=0.5)
        hint = f"did you mean '{ALIASES.get(near[0], near[0])}'? " if near else ""
        raise ValueError(f"unknown stage '{name}' ({hint}stages: {', '.join(STAGES)})")
    return name


def demo_recipe_text(small: bool = False) -> str:
    """The embedded demo recipe (`bloomforge/recipes/demo[-small].yaml`), comments included."""
    name = "demo-small.yaml" if small else "demo.yaml"
    return (resources.files("bloomforge") / "recipes" / name).read_text(encoding="utf-8")


def demo_recipe_data(small: bool = False) -> dict[str, Any]:
    """The embedded demo recipe as a mapping."""
    import yaml

    return yaml.safe_load(demo_recipe_text(small)) or {}
