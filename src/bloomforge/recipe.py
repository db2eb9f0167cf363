"""The recipe: one typed config for every stage (model, data, tokenizer, train, eval, parallel).

In: a YAML file and `key=value` overrides (`train.lr=3e-4`, `model=bloom-560m`,
`model.n_layer=2`). Out: a validated `Recipe`; `save_recipe` writes the resolved recipe that
goes into every run folder and checkpoint. Later stages fill their own sections.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bloomforge.model.config import ModelConfig
from bloomforge.typed_config import bounded, load_config, save_yaml


@dataclass
class DataConfig:
    tokens: str | None = None  # folder of token shards (`bloomforge data tokenize`)
    # Multitask finetuning instead: a folder of xP3 {inputs, targets} jsonl (`bloomforge mtf
    # build`, or your own), packed as BLOOMZ was trained (bloomforge.mtf.loader); groups are
    # its languages, weighted by `weights` or tokens^alpha.
    mtf: str | None = None
    # How data.mtf samples fill rows: "megatron", greedily in shuffled order as BLOOMZ was
    # trained (a row closes when the next sample does not fit), or "best_fit", first-fit
    # decreasing over windows of 1024 shuffled samples (fewer padding tokens; bench/finetune.py)
    packing: Literal["megatron", "best_fit"] = "megatron"
    seq_len: int = bounded(2048, ge=1)
    # Mixing units of the loader: sources (BLOOM weighted its datasets) or languages.
    group_by: Literal["source", "language"] = "source"
    weights: dict[str, float] | None = None  # explicit weight per group (a ratio file)
    alpha: float = bounded(
        1.0, ge=0
    )  # without weights: p_i ~ tokens_i^alpha (1.0 = natural proportions)
    valid_fraction: float = bounded(0.05, ge=0, lt=1)  # BLOOM held out 5% of each dataset


@dataclass
class TokenizerConfig:
    path: str | None = None  # tokenizer.json or a folder holding it
    vocab_size: int = bounded(32000, ge=1)
    alpha: float = bounded(0.3, ge=0)  # BLOOM: languages sampled with p_i ~ n_i^0.3


@dataclass
class TrainConfig:
    # Defaults: BLOOM tr11-176B-ml (bigscience-workshop/bigscience, train/tr11-176B-ml).
    lr: float = bounded(6e-5, ge=0)
    min_lr: float = bounded(6e-6, ge=0)
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup_tokens: int = bounded(375_000_000, ge=0)
    decay_tokens: int = bounded(410_000_000_000, gt=0)
    weight_decay: float = bounded(0.1, ge=0)
    beta1: float = bounded(0.9, ge=0, lt=1)
    beta2: float = bounded(0.95, ge=0, lt=1)
    eps: float = bounded(1e-8, gt=0)
    clip_grad: float = bounded(1.0, ge=0)
    global_batch_size: int = bounded(2048, ge=1)
    micro_batch_size: int = bounded(1, ge=1)
    # Megatron's --rampup-batch-size START INCREMENT SAMPLES; tr11: 192 16 9_765_625.
    rampup_batch_size: list[int] | None = None
    max_tokens: int | None = bounded(None, gt=0)
    # bf16 / fp16: Megatron's mixed precision (low-precision parameters and activations,
    # float32 master weights, float32 gradient accumulation and reduction) on every layout.
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    # fp16 loss scaling, DeepSpeed's config keys as the small BLOOM models' slurm files set them
    # (train/tr11-176B-ml/smaller_models/*.slurm): loss_scale 0 = dynamic, starting at
    # 2**initial_scale_power; halved after `hysteresis` overflows, doubled after
    # loss_scale_window clean steps, never below min_loss_scale (training/loss_scale.py).
    loss_scale: float = bounded(0.0, ge=0)
    initial_scale_power: int = bounded(12, ge=0, le=127)
    loss_scale_window: int = bounded(500, ge=1)
    hysteresis: int = bounded(2, ge=1)
    min_loss_scale: float = bounded(1.0, gt=0)
    # Prefix-LM objective (model.attention=prefix_lm), Megatron's pretrain_prefix_lm.py flags:
    # the loss on the targets only (after the prefix); Megatron defaults to False, see
    # training/objective.py for why the default here is True.
    loss_on_targets_only: bool = True
    # Megatron's --reweight-loss-based-on-position-frequency: weight position i by (T-i)/(T+1)*2.
    reweight_loss_based_on_position_frequency: bool = False
    # Multitask finetuning (data.mtf): every sample weighs the same in the loss, whatever its
    # target length (Megatron-DeepSpeed finetune_t0.py --norm-target-loss, tr13's "lossseq").
    norm_target_loss: bool = False
    # wsd: warmup, constant, then a linear decay to min_lr over the last wsd_decay_tokens of
    # decay_tokens (default: its last 20%).
    wsd_decay_tokens: int | None = bounded(None, ge=0)
    save_every: int = bounded(100, ge=0)  # steps; tr11 saved every 100 iterations
    keep_last: int = bounded(3, ge=1)  # checkpoints kept (older ones deleted after a save succeeds)
    log_every: int = bounded(1, ge=1)
    eval_every: int = bounded(0, ge=0)  # steps between validations (0: only at the end)
    eval_samples: int = bounded(64, ge=0)  # held-out samples per group per validation
    # steps between zero-shot evaluations of the recipe's eval.tasks (and at the end of the
    # run), logged beside the validation loss; 0: off (training/zero_shot.py)
    eval_tasks_every: int = bounded(0, ge=0)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Stop the run (exit code 1) after this many skipped steps in a row (non-finite loss or
    # gradient, grad-norm spike, fp16 overflow; user skip ranges do not count): a run that
    # cannot learn says so instead of ending "done" with a useless checkpoint. 0: off.
    max_consecutive_skips: int = bounded(50, ge=0)
    compile: bool = False  # torch.compile each block
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    # Stability (a step is skipped, counted and logged, and the run goes on):
    spike_factor: float = bounded(
        0.0, ge=0
    )  # skip when grad norm > factor x running median (0: off)
    spike_window: int = bounded(100, ge=1)  # steps in that running median
    # Megatron's --skip-train-iteration-range: "START-END" (inclusive, 1-based steps).
    skip_ranges: list[str] = field(default_factory=list)
    kill_switch: str | None = None  # a file whose appearance makes the run save and exit
    exit_duration_mins: float | None = bounded(
        None, gt=0
    )  # save and exit after this long (job chains)
    peak_tflops: float | None = bounded(None, gt=0)  # for MFU; default: the device table
    carbon_country: str = "FRA"  # codecarbon's offline tracker, when installed

    def __post_init__(self) -> None:
        if self.min_lr > self.lr:
            raise ValueError(
                f"key 'min_lr': must be <= train.lr ({self.lr:g}), got {self.min_lr:g}"
            )
        if self.warmup_tokens > self.decay_tokens:
            raise ValueError(
                f"key 'warmup_tokens': must be <= train.decay_tokens ({self.decay_tokens:g}), "
                f"got {self.warmup_tokens:g}"
            )
        if self.micro_batch_size > self.global_batch_size:
            raise ValueError(
                f"key 'micro_batch_size': must be <= train.global_batch_size "
                f"({self.global_batch_size}), got {self.micro_batch_size}"
            )
        if self.rampup_batch_size is not None:
            ramp = self.rampup_batch_size
            if len(ramp) != 3 or min(ramp) < 1:
                raise ValueError(
                    "key 'rampup_batch_size': must be [start, increment, samples], "
                    f"three positive integers, got {ramp}"
                )
            if ramp[0] > self.global_batch_size:
                raise ValueError(
                    f"key 'rampup_batch_size': start {ramp[0]} must be <= train.global_batch_size "
                    f"({self.global_batch_size})"
                )
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(
                f"key 'device': must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            )


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)
    data: str | None = None
    limit: int | None = bounded(None, ge=1)
    batch_size: int = bounded(8, ge=1)
    # promptsource templates (files or folders): score `tasks` under every prompt and report
    # the median over prompts, as BLOOMZ was evaluated (bloomforge.evaluation.prompted)
    prompts: list[str] = field(default_factory=list)


@dataclass
class ParallelConfig:
    dp: int = -1  # -1: whatever the world size leaves after tp x pp
    tp: int = bounded(1, ge=1)
    pp: int = bounded(1, ge=1)
    # FSDP2: 3 reshards parameters after forward; 2 keeps them (ZeRO-2-like)
    zero: Literal[2, 3] = 3
    pp_schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    pp_virtual_stages: int = bounded(1, ge=1)  # stages per pipeline rank (interleaved_1f1b)
    pp_embedding_as_layer: bool = False  # BLOOM: count the embedding as a block when splitting

    def __post_init__(self) -> None:
        if self.dp != -1 and self.dp < 1:
            raise ValueError(f"key 'dp': must be -1 (the rest) or >= 1, got {self.dp}")


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

    def __post_init__(self) -> None:
        if self.data.tokens and self.data.mtf:
            raise ValueError(
                "keys 'data.tokens' and 'data.mtf': set one (pretraining tokens or multitask "
                "finetuning records), not both"
            )


def load_recipe(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Recipe:
    return load_config(Recipe, path, overrides)


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    save_yaml(recipe, path)
