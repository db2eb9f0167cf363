"""Learning-rate schedules and batch-size rampup, counted in tokens and samples, not steps.

In: the train section of a recipe and the tokens / samples consumed so far. Out: the learning
rate, the global batch size and the number of micro-batches for the next step. Both follow
Megatron-LM's definitions (`AnnealingLR` / `OptimizerParamScheduler`, and
`RampupBatchsizeNumMicroBatches` in megatron/microbatches.py), which is what BLOOM's tr11 ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bloomforge.errors import BloomforgeError


def learning_rate(
    tokens: int,
    *,
    lr: float,
    min_lr: float,
    warmup_tokens: int,
    decay_tokens: int,
    schedule: str = "cosine",
    wsd_decay_tokens: int | None = None,
) -> float:
    """The lr after `tokens` consumed tokens (Megatron: linear warmup from 0, then decay)."""
    if warmup_tokens > 0 and tokens <= warmup_tokens:
        return lr * tokens / warmup_tokens
    if schedule == "constant":
        return lr
    if tokens > decay_tokens:
        return min_lr
    if schedule == "wsd":
        length = wsd_decay_tokens if wsd_decay_tokens is not None else decay_tokens // 5
        start = decay_tokens - length
        if tokens <= start:
            return lr
        return min_lr + (lr - min_lr) * (1.0 - (tokens - start) / max(length, 1))
    ratio = (tokens - warmup_tokens) / max(decay_tokens - warmup_tokens, 1)
    if schedule == "linear":
        coeff = 1.0 - ratio
    elif schedule == "cosine":
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1.0)
    else:
        raise BloomforgeError(f"train.schedule: unknown schedule '{schedule}'")
    return min_lr + coeff * (lr - min_lr)


@dataclass(frozen=True)
class BatchRampup:
    """Megatron's `RampupBatchsizeNumMicroBatches`: the global batch grows with consumed samples.

    BLOOM tr11: `--rampup-batch-size 192 16 9_765_625` with `--global-batch-size 2048`.
    """

    global_batch_size: int
    micro_batch_size: int
    data_parallel_size: int = 1
    start: int | None = None
    increment: int | None = None
    rampup_samples: int | None = None

    @classmethod
    def from_config(cls, gbs: int, mbs: int, dp: int, rampup: list[int] | None) -> BatchRampup:
        if rampup is None:
            out = cls(gbs, mbs, dp)
        elif len(rampup) != 3:
            raise BloomforgeError(
                "train.rampup_batch_size: expected [start, increment, samples], "
                f"got {len(rampup)} values"
            )
        else:
            out = cls(gbs, mbs, dp, *rampup)
        out.validate()
        return out

    @property
    def micro_times_dp(self) -> int:
        return self.micro_batch_size * self.data_parallel_size

    def validate(self) -> None:
        if self.global_batch_size % self.micro_times_dp:
            raise BloomforgeError(
                f"train.global_batch_size {self.global_batch_size} is not divisible by "
                f"micro_batch_size x data-parallel size = {self.micro_times_dp}"
            )
        if self.start is None:
            return
        if not 0 < self.start <= self.global_batch_size or self.increment <= 0:
            raise BloomforgeError(
                "train.rampup_batch_size: need 0 < start <= global, increment > 0"
            )
        if (self.global_batch_size - self.start) % self.increment:
            raise BloomforgeError(
                f"train.rampup_batch_size: global {self.global_batch_size} - start {self.start} "
                f"is not a multiple of the increment {self.increment}"
            )
        if self.start % self.micro_times_dp or self.increment % self.micro_times_dp:
            raise BloomforgeError(
                "train.rampup_batch_size: start and increment must be multiples of "
                f"micro_batch_size x data-parallel size = {self.micro_times_dp}"
            )

    def batch_size(self, consumed_samples: int) -> int:
        """The global batch size of the step that starts after `consumed_samples` samples."""
        if self.start is None or consumed_samples > self.rampup_samples:
            return self.global_batch_size
        num_increments = (self.global_batch_size - self.start) // self.increment
        if num_increments == 0:
            return self.global_batch_size
        samples_per_increment = self.rampup_samples / num_increments
        steps = int(consumed_samples / samples_per_increment)
        return min(self.start + steps * self.increment, self.global_batch_size)

    def plan(self, seq_len: int, max_tokens: int) -> tuple[int, list[dict[str, int]]]:
        """Steps until `max_tokens` are consumed, and the steps where the batch size changes."""
        milestones: list[dict[str, int]] = []
        steps, samples = 0, 0
        while samples * seq_len < max_tokens:
            bs = self.batch_size(samples)
            if not milestones or milestones[-1]["batch_size"] != bs:
                milestones.append(
                    {"from_step": steps + 1, "from_samples": samples, "batch_size": bs}
                )
            if self.start is None or samples > self.rampup_samples:
                # the batch is constant from here on
                return steps + math.ceil(
                    (max_tokens - samples * seq_len) / (bs * seq_len)
                ), milestones
            samples += bs
            steps += 1
        return steps, milestones

    def num_micro_batches(self, consumed_samples: int) -> int:
        return self.batch_size(consumed_samples) // self.micro_times_dp


def parse_skip_ranges(ranges: list[str]) -> list[tuple[int, int]]:
    """`["100-200", "350-350"]` -> [(100, 200), (350, 350)]: inclusive 1-based step ranges."""
    out = []
    for item in ranges:
        try:
            a, b = (int(x) for x in str(item).split("-", 1))
        except ValueError:
            raise BloomforgeError(
                f"train.skip_ranges: '{item}' is not START-END (e.g. 100-200)"
            ) from None
        if a < 1 or b < a:
            raise BloomforgeError(f"train.skip_ranges: '{item}' needs 1 <= START <= END")
        out.append((a, b))
    return out
