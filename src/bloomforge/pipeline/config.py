"""The run recipe: one typed file for every stage of `bloomforge run`.

In: a YAML file (or the embedded demo recipes, `demo_recipe(small)`) and `a.b=value` overrides.
Out: a validated `RunRecipe`; an unknown key names the nearest valid one
(`bloomforge.typed_config`).

Sections and the stage that reads them:
  corpus    -> corpus     text found on this machine (message catalogues, Python stdlib); optional
  data      -> data       `bloomforge.data.prepare`'s PrepareConfig (sources, filters, dedup, PII)
  tokenizer -> tokenizer  BPE training (vocab, alpha) and the fertility text
  tokens    -> tokens     held-out split and token shards
  model, loader, train, seed -> train   the training recipe of `bloomforge.recipe` (`loader` is
                          its `data` section; `loader.tokens` is filled in by the pipeline)
  mtf       -> mtf        optional: prompted multitask data (`bloomforge mtf build`)
  finetune  -> finetune   optional: BLOOMZ-style finetuning of the trained (or an imported)
                          model on it, rank evaluation over prompts before and after; eval and
                          export then take the finetuned model
  eval      -> eval       perplexity per language, zero-shot tasks, generations per language
  export    -> export     HF folder (and a logits check against transformers)
  report    -> report     report.html, MODEL_CARD.md, DATA_CARD.md
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from bloomforge.model.config import ModelConfig
from bloomforge.recipe import DataConfig, TrainConfig
from bloomforge.typed_config import apply_overrides, bounded, from_dict, load_yaml

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


@dataclass
class CorpusConfig:
    """Text from this machine: translated message catalogues and the Python standard library."""

    locale_dir: str = "/usr/share/locale"
    languages: int = 8  # the N languages with the most translated text (after `include`)
    include: list[str] = field(default_factory=list)  # languages always taken when present
    min_language_bytes: int = 200_000  # a language with less translated text is left out
    max_bytes_per_language: int = 1_000_000
    english_bytes: int = 1_000_000  # msgids (the English originals) as the "en" text; 0: none
    document_bytes: int = 4_000  # consecutive messages of a catalogue joined into documents
    code_dir: str | None = None  # None: this Python's standard library
    code_bytes: int = 2_000_000  # 0: no code source


@dataclass
class TokenizerStage:
    vocab_size: int = 8000
    alpha: float = 0.3  # BLOOM §3.2: languages sampled with p_i ∝ n_i^0.3
    max_bytes_per_language: int = 1_000_000_000
    min_frequency: int = 2
    seed: int = 0
    fertility: list[str] = field(default_factory=list)  # LANG=PATH; empty: a sample of data/
    fertility_docs: int = 200  # documents per language in that sample


@dataclass
class TokensStage:
    # Every k-th document of a language is held out (perplexity text, prompts), k = this or
    # less for a small language, up to heldout_docs per language; the rest is tokenized.
    heldout_every: int = 50
    heldout_docs: int = 100
    shard_tokens: int = 2**28


@dataclass
class EvalStage:
    perplexity: dict[str, str] = field(default_factory=dict)  # LANG: PATH; empty: heldout/
    tasks: list[str] = field(default_factory=list)  # zero-shot tasks (needs `data`)
    data: str | None = None  # folder with the task files (xcopa/, copa/, ...)
    limit: int | None = None
    batch_size: int = 16
    prompts: dict[str, list[str]] = field(default_factory=dict)  # empty: from heldout/
    prompts_per_language: int = 2
    prompt_words: int = 4  # a prompt taken from held-out text is its first words
    max_new_tokens: int = 24
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 1


@dataclass
class MTFStage:
    """`bloomforge mtf build`: promptsource templates x local datasets -> OUT/xp3."""

    templates: list[str] = field(default_factory=list)  # templates.yaml files or folders
    tasks: dict[str, str] = field(default_factory=dict)  # dataset name -> its folder or file
    max_per_dataset: int | None = bounded(2000, ge=1)  # records per dataset x language
    seed: int = 0


@dataclass
class FinetuneTrainConfig(TrainConfig):
    """`train` with tr13's defaults (recipes/bloomz-*.yaml) at a size a CPU finishes: constant
    lr 2e-5, no warmup, weight decay 1e-4, every sample weighing the same (norm_target_loss)."""

    lr: float = bounded(2e-5, ge=0)
    min_lr: float = bounded(2e-5, ge=0)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "constant"
    warmup_tokens: int = bounded(0, ge=0)
    decay_tokens: int = bounded(1_000_000, gt=0)
    max_tokens: int | None = bounded(1_000_000, gt=0)
    weight_decay: float = bounded(1e-4, ge=0)
    global_batch_size: int = bounded(16, ge=1)
    micro_batch_size: int = bounded(8, ge=1)
    norm_target_loss: bool = True
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"


@dataclass
class FinetuneStage:
    """Multitask finetuning (`bloomforge finetune`) on OUT/xp3 -> OUT/finetune."""

    init: str | None = None  # None: the train stage's model; else a checkpoint or HF folder
    loader: DataConfig = field(default_factory=lambda: DataConfig(seq_len=256))
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    # held-out rank evaluation, before and after: tasks under every prompt (median over prompts)
    tasks: list[str] = field(default_factory=list)
    data: str | None = None  # folder with the task files (xcopa/, copa/, ...)
    prompts: list[str] = field(default_factory=list)  # promptsource templates
    limit: int | None = bounded(None, ge=1)
    batch_size: int = bounded(16, ge=1)

    def __post_init__(self) -> None:
        if self.loader.tokens is not None or self.loader.mtf is not None:
            raise ValueError("keys 'loader.tokens' / 'loader.mtf': set by the pipeline; remove")
        if self.tasks and not self.prompts:
            raise ValueError("key 'tasks': rank evaluation needs 'prompts' (promptsource files)")


@dataclass
class ExportStage:
    check: bool = True  # load the folder with transformers and compare logits with ours


@dataclass
class ReportStage:
    title: str | None = None
    # Without codecarbon's measured emissions.csv the report estimates energy as training time
    # x this average draw of the machine (W); set it to what your machine really draws.
    power_w: float = 100.0
    grid_country: str | None = None  # None: train.carbon_country


@dataclass
class RunRecipe:
    corpus: CorpusConfig | None = None
    data: dict[str, Any] = field(default_factory=dict)
    tokenizer: TokenizerStage = field(default_factory=TokenizerStage)
    tokens: TokensStage = field(default_factory=TokensStage)
    model: ModelConfig = field(default_factory=lambda: ModelConfig.from_name("tiny"))
    loader: DataConfig = field(default_factory=lambda: DataConfig(seq_len=256))
    train: TrainConfig = field(default_factory=TrainConfig)
    mtf: MTFStage | None = None
    finetune: FinetuneStage | None = None
    eval: EvalStage = field(default_factory=EvalStage)
    export: ExportStage = field(default_factory=ExportStage)
    report: ReportStage = field(default_factory=ReportStage)
    seed: int = 1234
    workers: int = 2  # processes/threads for data prepare and tokenization

    def __post_init__(self) -> None:
        if self.loader.tokens is not None:
            raise ValueError("key 'loader.tokens': set by the pipeline (OUT/tokens); remove it")
        if self.workers < 1:
            raise ValueError(f"key 'workers': must be >= 1, got {self.workers}")
        if (self.mtf is None) != (self.finetune is None):
            raise ValueError("keys 'mtf' and 'finetune': give both sections (or neither)")


# The sections each stage reads: its fingerprint hashes exactly these.
STAGE_SECTIONS = {
    "corpus": ("corpus",),
    "data": ("data",),
    "tokenizer": ("tokenizer",),
    "tokens": ("tokens",),
    "train": ("model", "loader", "train", "seed"),
    "mtf": ("mtf",),
    "finetune": ("finetune", "seed"),
    "eval": ("eval",),
    "export": ("export",),
    "report": ("report",),
}


def stage_name(name: str) -> str:
    """A stage name or alias -> the stage; a one-line error naming the valid ones."""
    name = ALIASES.get(name, name)
    if name not in STAGES:
        import difflib

        near = difflib.get_close_matches(name, [*STAGES, *ALIASES], n=1, cutoff=0.5)
        hint = f"did you mean '{ALIASES.get(near[0], near[0])}'? " if near else ""
        raise ValueError(f"unknown stage '{name}' ({hint}stages: {', '.join(STAGES)})")
    return name


def load_run_recipe(
    path: str | os.PathLike | None, overrides: Sequence[str] = (), base: dict | None = None
) -> RunRecipe:
    """`base` (or the YAML at `path`) with overrides applied, validated as a RunRecipe."""
    data = dict(base) if base is not None else {}
    if path is not None:
        data = load_yaml(path)
    return from_dict(RunRecipe, apply_overrides(data, overrides))


def demo_recipe_text(small: bool = False) -> str:
    """The embedded demo recipe (`bloomforge/recipes/demo[-small].yaml`), comments included."""
    name = "demo-small.yaml" if small else "demo.yaml"
    return (resources.files("bloomforge") / "recipes" / name).read_text(encoding="utf-8")


def demo_recipe_data(small: bool = False) -> dict[str, Any]:
    """The embedded demo recipe as a mapping."""
    import yaml

    return yaml.safe_load(demo_recipe_text(small)) or {}
