"""The recipe's training sections: `train` (the loop's settings) and `finetune` (a run's stage).

In: the mappings under `train:` and `finetune:` of a recipe. Out: a validated `TrainConfig`
(defaults: BLOOM tr11), read by `training.loop.Trainer`, and a `FinetuneConfig`: the sections
`bloomforge run`'s finetune stage puts in place of the recipe's own (`data`, `train`, `eval`)
when it finetunes the trained model as `bloomforge finetune` would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bloomforge.data.config import DataConfig
from bloomforge.evaluation.config import EvalConfig
from bloomforge.typed_config import bounded


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
class FinetuneConfig:
    """Multitask finetuning in `bloomforge run` (`bloomforge finetune` on OUT/xp3 -> OUT/finetune).

    `data`, `train` and `eval` replace the recipe's own sections for this stage; `eval` is the
    held-out rank evaluation before and after (tasks under every prompt, median over prompts)."""

    init: str | None = None  # None: the train stage's model; else a checkpoint or HF folder
    data: DataConfig = field(default_factory=lambda: DataConfig(seq_len=256))
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    RENAMED: ClassVar[dict[str, str]] = {
        "loader": "it is 'finetune.data'",
        **{k: f"it is 'finetune.eval.{k}'" for k in ("tasks", "prompts", "limit", "batch_size")},
    }

    def __post_init__(self) -> None:
        if self.data.tokens is not None or self.data.mtf is not None:
            raise ValueError("keys 'data.tokens' / 'data.mtf': set by the pipeline; remove")
        if self.eval.tasks and not self.eval.prompts:
            raise ValueError(
                "key 'eval.tasks': rank evaluation needs 'eval.prompts' (promptsource files)"
            )
