"""The one place that knows the layout of a `bloomforge run` folder.

In: the run folder. Out: the path of every file and folder a run writes or reads there, by name
(`RunLayout(run).tokenizer_json`, `.record("train")`), so no other module spells a file name:

  recipe.yaml                      the resolved run recipe           runner
  .stages/<stage>.json, .started   a finished stage's record, a started stage's marker
  corpus/<source>.jsonl, manifest.json                               corpus
  data/documents/, data/stats.json the prepared documents, their ledger   data
  tokenizer/tokenizer.json, sampling.json, fertility.json/.md, fertility_text.jsonl
  heldout/<lang>.jsonl, tokens/manifest.json (+ shards), .tokens-input-*/ (scratch)   tokens
  train/ (checkpoints/, config.yaml, metrics.jsonl, emissions.csv, tb/)   train
  xp3/<lang>.jsonl + manifest.json                                   mtf
  finetune/ (a training run as train/, + rank_eval.json)             finetune
  eval/results.json                                                  eval
  hf/ (config.json, model.safetensors, tokenizer)                    export
  report.html, MODEL_CARD.md, DATA_CARD.md                           report

`rel` gives a path relative to the run folder (a stage's `outputs`); `named` every path above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The files of a training run folder (train/, finetune/), as `bloomforge train` writes them.
CHECKPOINTS = "checkpoints"
TRAIN_CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
EMISSIONS = "emissions.csv"
TENSORBOARD = "tb"
MANIFEST = "manifest.json"
SCRATCH_PREFIX = ".tokens-input-"  # the tokens stage's scratch folder (removed after)


@dataclass(frozen=True)
class RunLayout:
    run: Path

    def rel(self, path: Path) -> str:
        """`path` relative to the run folder, with '/' (a stage's outputs are named so)."""
        return path.relative_to(self.run).as_posix()

    # The runner's own files.
    @property
    def recipe(self) -> Path:
        return self.run / "recipe.yaml"

    @property
    def records(self) -> Path:
        return self.run / ".stages"

    def record(self, stage: str) -> Path:
        """A finished stage's record, written last."""
        return self.records / f"{stage}.json"

    def started(self, stage: str) -> Path:
        """A started stage's marker (its fingerprint): a cut stage with it resumes."""
        return self.records / f"{stage}.started"

    # corpus
    @property
    def corpus(self) -> Path:
        return self.run / "corpus"

    @property
    def corpus_manifest(self) -> Path:
        return self.corpus / MANIFEST

    # data
    @property
    def data(self) -> Path:
        return self.run / "data"

    @property
    def documents(self) -> Path:
        return self.data / "documents"

    @property
    def data_stats(self) -> Path:
        return self.data / "stats.json"

    # tokenizer
    @property
    def tokenizer(self) -> Path:
        return self.run / "tokenizer"

    @property
    def tokenizer_json(self) -> Path:
        return self.tokenizer / "tokenizer.json"

    @property
    def sampling(self) -> Path:
        return self.tokenizer / "sampling.json"

    @property
    def fertility_json(self) -> Path:
        return self.tokenizer / "fertility.json"

    @property
    def fertility_md(self) -> Path:
        return self.tokenizer / "fertility.md"

    @property
    def fertility_text(self) -> Path:
        return self.tokenizer / "fertility_text.jsonl"

    # tokens
    @property
    def heldout(self) -> Path:
        return self.run / "heldout"

    def heldout_file(self, segment: str) -> Path:
        """The held-out documents of one language (`segment`: its file-safe name)."""
        return self.heldout / f"{segment}.jsonl"

    @property
    def tokens(self) -> Path:
        return self.run / "tokens"

    @property
    def tokens_manifest(self) -> Path:
        return self.tokens / MANIFEST

    def tokens_scratch(self) -> list[Path]:
        """Scratch folders of the tokens stage left by a killed attempt."""
        return sorted(self.run.glob(f"{SCRATCH_PREFIX}*"))

    # train
    @property
    def train(self) -> Path:
        return self.run / "train"

    @property
    def train_checkpoints(self) -> Path:
        return self.train / CHECKPOINTS

    @property
    def train_config(self) -> Path:
        return self.train / TRAIN_CONFIG

    @property
    def train_metrics(self) -> Path:
        return self.train / METRICS

    @property
    def train_emissions(self) -> Path:
        return self.train / EMISSIONS

    @property
    def train_tensorboard(self) -> Path:
        return self.train / TENSORBOARD

    # mtf
    @property
    def xp3(self) -> Path:
        return self.run / "xp3"

    @property
    def xp3_manifest(self) -> Path:
        return self.xp3 / MANIFEST

    # finetune
    @property
    def finetune(self) -> Path:
        return self.run / "finetune"

    @property
    def finetune_checkpoints(self) -> Path:
        return self.finetune / CHECKPOINTS

    @property
    def finetune_config(self) -> Path:
        return self.finetune / TRAIN_CONFIG

    @property
    def finetune_metrics(self) -> Path:
        return self.finetune / METRICS

    @property
    def finetune_emissions(self) -> Path:
        return self.finetune / EMISSIONS

    @property
    def finetune_tensorboard(self) -> Path:
        return self.finetune / TENSORBOARD

    @property
    def rank_eval(self) -> Path:
        return self.finetune / "rank_eval.json"

    def final_model(self, finetunes: bool) -> Path:
        """The model eval, export and the report describe: the finetuned one when there is one."""
        return self.finetune if finetunes else self.train

    # eval
    @property
    def eval(self) -> Path:
        return self.run / "eval"

    @property
    def eval_results(self) -> Path:
        return self.eval / "results.json"

    # export
    @property
    def hf(self) -> Path:
        return self.run / "hf"

    @property
    def hf_config(self) -> Path:
        return self.hf / "config.json"

    # report
    @property
    def report_html(self) -> Path:
        return self.run / "report.html"

    @property
    def model_card(self) -> Path:
        return self.run / "MODEL_CARD.md"

    @property
    def data_card(self) -> Path:
        return self.run / "DATA_CARD.md"

    @property
    def reports(self) -> tuple[Path, Path, Path]:
        """What the report stage writes, in order: the page, the model card, the data card."""
        return self.report_html, self.model_card, self.data_card

    def named(self) -> set[Path]:
        """Every path named above (records and markers not included: they take a stage)."""
        props = [k for k, v in vars(RunLayout).items() if isinstance(v, property)]
        out = {getattr(self, k) for k in props if k != "reports"}
        return out | set(self.reports)
