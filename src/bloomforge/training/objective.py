"""The training objective: what a batch of packed samples becomes for the model's forward.

In: samples (B, T+1) of token ids from the loader and each sample's global index. Out: an
`LMBatch`: inputs (B, T), targets (B, T) (-100 where a target does not count), and for
prefix-LM models the prefix length of each row and, optionally, per-target loss weights.

Causal LM (BLOOM): inputs are the first T tokens, targets the next ones, every target counts.

Prefix LM, as Megatron-DeepSpeed's `pretrain_prefix_lm.py` trains it (megatron/utils.py,
`get_prefix_indices` with `reset_attention_mask=False` and `get_ltor_masks_and_position_ids`):
- each row draws a prefix index p uniformly in [1, T] (`randint(1, seq_length)`); the model
  attends bidirectionally inside columns [0, p) and causally after them (ALiBi unchanged);
- `loss_on_targets_only`: the loss skips the predictions made inside the prefix except the last
  one (`loss_mask[:p - 1] = 0`: the last prefix token predicts the first target). Megatron's
  flag defaults to off; here it defaults to on, as BigScience's own prefix-LM runs set it
  (bigscience-workshop/bigscience train/tr6-1B3-prefix-lm/tr6-1B3-modeling-prefix-lm.slurm:
  `--loss-on-targets-only`): with a bidirectional prefix a token inside it sees the very token
  it is asked to predict, so that loss only teaches copying;
- `reweight_loss_based_on_position_frequency` (`reweight_loss_mask_`): the loss mask is
  multiplied by (T - i) / (T + 1) * 2 at position i, and the loss is sum(w CE) / sum(w).
Megatron draws p from Python's global `random`; here p comes from a generator keyed by the seed
and the sample's global index, so every layout and every resume draws the same prefixes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE = -100
_PREFIX_STREAM = 0x5052  # separates the prefix draws from every other use of the seed


@dataclass
class LMBatch:
    inputs: Tensor  # (B, T)
    targets: Tensor  # (B, T), IGNORE where a target does not count
    prefix_len: Tensor | None = None  # (B,) prefix-LM: columns visible to every query
    loss_weights: Tensor | None = None  # (B, T) weights of the counted targets

    def to(self, device: torch.device) -> LMBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return LMBatch(
            move(self.inputs), move(self.targets), move(self.prefix_len), move(self.loss_weights)
        )

    def split(self, size: int) -> list[LMBatch]:
        """Micro-batches of `size` rows."""
        parts = [t.split(size) if t is not None else None for t in self._fields()]
        n = len(parts[0])
        return [LMBatch(*(p[i] if p is not None else None for p in parts)) for i in range(n)]

    def _fields(self) -> tuple[Tensor | None, ...]:
        return self.inputs, self.targets, self.prefix_len, self.loss_weights

    def forward_kwargs(self) -> dict[str, Tensor]:
        """What the model's forward takes besides the inputs."""
        kw = {"targets": self.targets}
        if self.prefix_len is not None:
            kw["prefix_len"] = self.prefix_len
        if self.loss_weights is not None:
            kw["loss_weights"] = self.loss_weights
        return kw


@dataclass(frozen=True)
class Objective:
    prefix_lm: bool = False
    seed: int = 0
    loss_on_targets_only: bool = True
    reweight_by_position: bool = False

    @property
    def plain(self) -> bool:
        """True when a batch is just (inputs, next tokens)."""
        return not (self.prefix_lm or self.reweight_by_position)

    def prefix_indices(self, sample_ids: Sequence[int], seq_len: int, stream: int) -> Tensor:
        """Each sample's prefix index in [1, seq_len], a function of (seed, stream, sample)."""
        out = [
            int(
                np.random.default_rng([self.seed, _PREFIX_STREAM, stream, int(i)]).integers(
                    1, seq_len + 1
                )
            )
            for i in sample_ids
        ]
        return torch.tensor(out, dtype=torch.long)

    def batch(self, samples: Tensor, sample_ids: Sequence[int], stream: int = 0) -> LMBatch:
        """samples (B, T+1) -> LMBatch. `stream` 0: training samples, 1: validation windows."""
        inputs, targets = samples[:, :-1], samples[:, 1:]
        if self.plain:
            return LMBatch(inputs, targets)
        B, T = inputs.shape
        targets = targets.clone()
        prefix = weights = None
        if self.prefix_lm:
            prefix = self.prefix_indices(sample_ids, T, stream)
            if self.loss_on_targets_only:
                cols = torch.arange(T)[None, :]
                targets[cols < (prefix[:, None] - 1)] = IGNORE
        if self.reweight_by_position:
            # Megatron: arange(seq_length, 0, -1) / (seq_length + 1) * 2
            w = torch.arange(T, 0, -1, dtype=torch.float32) / (T + 1) * 2
            weights = w[None, :].expand(B, T).contiguous()
        return LMBatch(inputs, targets, prefix, weights)
