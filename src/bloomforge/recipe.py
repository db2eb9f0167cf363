"""The recipe: one typed tree for everything a run needs, from raw text to an exported model.

In: a YAML file and `key=value` overrides (`train.lr=3e-4`, `model=bloom-560m`,
`model.n_layer=2`). Out: a validated `Recipe`; `save_recipe` writes the resolved recipe that goes
into every run folder and checkpoint (`config.yaml`). Each section's type lives beside the
package that reads it (a leaf `config.py` module; docs/ARCHITECTURE.md):

  model      model/config.py        ModelConfig (named presets: `model: bloom-560m`)
  parallel   parallel/config.py     ParallelConfig
  tokenizer  tokenizer/config.py    TokenizerConfig: `path` for train/finetune; training options
  data       data/config.py         DataConfig: the training loader (token shards or xP3 records)
  train      training/config.py     TrainConfig (BLOOM tr11 defaults)
  eval       evaluation/config.py   EvalConfig (tasks, prompts, perplexity, generations)
  init, out, seed                   weights to start from; the run folder; the seed

`bloomforge train` and `finetune` read the sections above; `bloomforge run` reads them all, plus
its stages' own sections, which `train` ignores:

  corpus     data/config.py            CorpusConfig (text found on this machine), optional
  prepare    data/prepare/config.py    PrepareConfig (`bloomforge data prepare`'s data.yaml)
  tokens     data/config.py            TokensConfig (held-out split, token shards)
  mtf        mtf/config.py             MTFConfig (`bloomforge mtf build`), optional
  finetune   training/config.py        FinetuneConfig (its own data/train/eval), optional
  export     interop/config.py         ExportConfig
  report     pipeline/config.py        ReportConfig
  workers                              processes for data prepare and tokenization

A key of the former run schema (`loader`, data prepare's keys under `data`, ...) is a one-line
error naming where it went.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from bloomforge.data.config import CorpusConfig, DataConfig, TokensConfig
from bloomforge.data.prepare.config import PrepareConfig
from bloomforge.evaluation.config import EvalConfig, GenerateConfig
from bloomforge.interop.config import ExportConfig
from bloomforge.model.config import ModelConfig
from bloomforge.mtf.config import MTFConfig
from bloomforge.parallel.config import ParallelConfig
from bloomforge.pipeline.config import ReportConfig
from bloomforge.tokenizer.config import TokenizerConfig
from bloomforge.training.config import FinetuneConfig, FinetuneTrainConfig, TrainConfig
from bloomforge.typed_config import bounded, load_config, save_yaml

__all__ = [
    "CorpusConfig",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "FinetuneConfig",
    "FinetuneTrainConfig",
    "GenerateConfig",
    "MTFConfig",
    "ModelConfig",
    "ParallelConfig",
    "PrepareConfig",
    "Recipe",
    "ReportConfig",
    "TokenizerConfig",
    "TokensConfig",
    "TrainConfig",
    "load_recipe",
    "save_recipe",
]


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    out: str | None = None
    seed: int = bounded(1234, ge=0)
    # Weights to start from: a bloomforge checkpoint or run folder, or a local Hugging Face
    # BLOOM folder. The model's shape comes from it; the optimizer and progress start fresh
    # (tr13's --no-load-optim --reset-progress). A resumed run ignores it.
    init: str | None = None
    # The stages of `bloomforge run` (pipeline/stages.py); `train` and `finetune` ignore them.
    corpus: CorpusConfig | None = None
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    mtf: MTFConfig | None = None
    finetune: FinetuneConfig | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    workers: int = bounded(2, ge=1)  # processes/threads for data prepare and tokenization

    RENAMED: ClassVar[dict[str, str]] = {
        "loader": "the training loader's section is 'data' (data prepare's is 'prepare')",
    }

    def __post_init__(self) -> None:
        if self.data.tokens and self.data.mtf:
            raise ValueError(
                "keys 'data.tokens' and 'data.mtf': set one (pretraining tokens or multitask "
                "finetuning records), not both"
            )
        if (self.mtf is None) != (self.finetune is None):
            raise ValueError("keys 'mtf' and 'finetune': give both sections (or neither)")


def load_recipe(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Recipe:
    return load_config(Recipe, path, overrides)


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    save_yaml(recipe, path)
