"""The recipe: one typed config for every stage (model, data, tokenizer, train, eval, parallel).

In: a YAML file and `key=value` overrides (`train.lr=3e-4`, `model=bloom-560m`,
`model.n_layer=2`). Out: a validated `Recipe`; `save_recipe` writes the resolved recipe that
goes into every run folder and checkpoint. Later stages fill their own sections.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from bloomforge.model.config import ModelConfig
from bloomforge.typed_config import load_config, save_yaml


@dataclass
class DataConfig:
    tokens: str | None = None  # folder of token shards (`bloomforge data tokenize`)
    seq_len: int = 2048
    # Mixing units of the loader: sources (BLOOM weighted its datasets) or languages.
    group_by: Literal["source", "language"] = "source"
    weights: dict[str, float] | None = None  # explicit weight per group (a ratio file)
    alpha: float = 1.0  # without weights: p_i ~ tokens_i^alpha (1.0 = natural proportions)
    valid_fraction: float = 0.05  # BLOOM held out 5% of each dataset


@dataclass
class TokenizerConfig:
    path: str | None = None  # tokenizer.json or a folder holding it
    vocab_size: int = 32000
    alpha: float = 0.3  # BLOOM: languages sampled with p_i ~ n_i^0.3


@dataclass
class TrainConfig:
    # Defaults: BLOOM tr11-176B-ml (bigscience-workshop/bigscience, train/tr11-176B-ml).
    lr: float = 6e-5
    min_lr: float = 6e-6
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup_tokens: int = 375_000_000
    decay_tokens: int = 410_000_000_000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0
    global_batch_size: int = 2048
    micro_batch_size: int = 1
    # Megatron's --rampup-batch-size START INCREMENT SAMPLES; tr11: 192 16 9_765_625.
    rampup_batch_size: list[int] | None = None
    max_tokens: int | None = None
    # bf16 / fp16: Megatron's mixed precision (low-precision parameters and activations,
    # float32 master weights, float32 gradient accumulation and reduction) on every layout.
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    # fp16 loss scaling, DeepSpeed's config keys as the small BLOOM models' slurm files set them
    # (train/tr11-176B-ml/smaller_models/*.slurm): loss_scale 0 = dynamic, starting at
    # 2**initial_scale_power; halved after `hysteresis` overflows, doubled after
    # loss_scale_window clean steps, never below min_loss_scale (training/loss_scale.py).
    loss_scale: float = 0.0
    initial_scale_power: int = 12
    loss_scale_window: int = 500
    hysteresis: int = 2
    min_loss_scale: float = 1.0
    # Prefix-LM objective (model.attention=prefix_lm), Megatron's pretrain_prefix_lm.py flags:
    # the loss on the targets only (after the prefix); Megatron defaults to False, see
    # training/objective.py for why the default here is True.
    loss_on_targets_only: bool = True
    # Megatron's --reweight-loss-based-on-position-frequency: weight position i by (T-i)/(T+1)*2.
    reweight_loss_based_on_position_frequency: bool = False
    # wsd: warmup, constant, then a linear decay to min_lr over the last wsd_decay_tokens of
    # decay_tokens (default: its last 20%).
    wsd_decay_tokens: int | None = None
    save_every: int = 100  # steps; tr11 saved every 100 iterations
    keep_last: int = 3  # checkpoints kept (older ones deleted after a save succeeds)
    log_every: int = 1
    eval_every: int = 0  # steps between validations (0: only at the end)
    eval_samples: int = 64  # held-out samples per group per validation
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile each block
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    # Stability (a step is skipped, counted and logged, and the run goes on):
    spike_factor: float = 0.0  # skip when grad norm > factor x running median (0: off)
    spike_window: int = 100  # steps in that running median
    # Megatron's --skip-train-iteration-range: "START-END" (inclusive, 1-based steps).
    skip_ranges: list[str] = field(default_factory=list)
    kill_switch: str | None = None  # a file whose appearance makes the run save and exit
    exit_duration_mins: float | None = None  # save and exit after this long (job chains)
    peak_tflops: float | None = None  # for MFU; default: the device table
    carbon_country: str = "FRA"  # codecarbon's offline tracker, when installed


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)
    data: str | None = None
    limit: int | None = None
    batch_size: int = 8


@dataclass
class ParallelConfig:
    dp: int = -1  # -1: whatever the world size leaves after tp x pp
    tp: int = 1
    pp: int = 1
    zero: int = 3  # FSDP2: 3 reshards parameters after forward; 2 keeps them (ZeRO-2-like)
    pp_schedule: str = "1f1b"  # gpipe | 1f1b | interleaved_1f1b
    pp_virtual_stages: int = 1  # stages per pipeline rank (interleaved_1f1b)
    pp_embedding_as_layer: bool = False  # BLOOM: count the embedding as a block when splitting


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    out: str | None = None
    seed: int = 1234


def load_recipe(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Recipe:
    return load_config(Recipe, path, overrides)


def save_recipe(recipe: Recipe, path: str | os.PathLike) -> None:
    save_yaml(recipe, path)
