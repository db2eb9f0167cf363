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

from collections.abc import Iterable, Sequence
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
    doc_ids: Tensor | None = None  # (B, T) packed samples: attention stays inside a sample
    is_input: Tensor | None = None  # (B, T) non-causal MTF: a sample's input sees all of itself
    position_ids: Tensor | None = None  # (B, T) learned positions restart in every sample

    def to(self, device: torch.device) -> LMBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return LMBatch(*(move(t) for t in self._fields()))

    def split(self, size: int) -> list[LMBatch]:
        """Micro-batches of `size` rows."""
        parts = [t.split(size) if t is not None else None for t in self._fields()]
        n = len(parts[0])
        return [LMBatch(*(p[i] if p is not None else None for p in parts)) for i in range(n)]

    def _fields(self) -> tuple[Tensor | None, ...]:
        return (
            self.inputs,
            self.targets,
            self.prefix_len,
            self.loss_weights,
            self.doc_ids,
            self.is_input,
            self.position_ids,
        )

    def forward_kwargs(self) -> dict[str, Tensor]:
        """What the model's forward takes besides the inputs."""
        kw = {"targets": self.targets}
        for name in ("prefix_len", "loss_weights", "doc_ids", "is_input", "position_ids"):
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
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

    def count(self, batch: LMBatch) -> int:
        """What a batch's mean loss weighs when batches are averaged: every position
        (Megatron's mean of micro-batch losses)."""
        return batch.targets.numel()


@dataclass(frozen=True)
class MTFObjective:
    """Packed multitask rows (bloomforge.mtf.loader.PackedRows) -> an LMBatch, as Megatron-
    DeepSpeed's `finetune_t0.py` `get_batch` (the tr13 runs that made BLOOMZ) builds one:

    - targets count only where the label is a target token of a sample (`~decoder_is_inputs[:,
      1:]`) and not padding: no loss on the inputs, nor on a sample's last token predicting
      the next sample's first;
    - attention stays inside each sample (`get_packed_attention_mask`'s segment mask, ALiBi
      unchanged); with `non_causal` a sample's input tokens also see each other both ways
      (is_causal=False, the non-causal decoder of finetune_t0_non_causal_decoder.py);
    - positions restart at 0 in every sample (finetune_t0.py does so for absolute position
      embeddings; for ALiBi and rotary it changes nothing, distances inside a sample are kept);
    - `norm_target_loss` (tr13's "lossseq" runs, `--norm-target-loss`, `fast_normalize`): each
      target token weighs 1 / (its sample's target length), so the micro-batch loss
      sum(w CE) / sum(w) is the mean over samples of each sample's mean target loss.
    """

    non_causal: bool = False
    norm_target_loss: bool = False

    def batch(self, rows, sample_ids: Sequence[int] = (), stream: int = 0) -> LMBatch:
        tokens, segments, is_input = rows.tokens, rows.segment_ids, rows.is_input
        inputs, labels = tokens[:, :-1], tokens[:, 1:]
        doc = segments[:, :-1]
        label_doc = segments[:, 1:]
        counted = ~is_input[:, 1:] & (label_doc != 0)
        targets = labels.masked_fill(~counted, IGNORE)
        weights = None
        if self.norm_target_loss:
            n_docs = int(label_doc.max()) + 1
            # float64 here; the loss casts to its own precision (1/3 stays 1/3 in a float64 check)
            per_doc = torch.zeros(labels.shape[0], n_docs, dtype=torch.float64)
            per_doc.scatter_add_(1, label_doc, counted.double())
            weights = counted.double() / per_doc.gather(1, label_doc).clamp(min=1.0)
        return LMBatch(
            inputs,
            targets,
            loss_weights=weights,
            doc_ids=doc,
            is_input=is_input[:, :-1] if self.non_causal else None,
            position_ids=segment_positions(doc),
        )

    def count(self, batch: LMBatch) -> int:
        """Rows hold different numbers of targets: a batch weighs its counted targets."""
        return int((batch.targets != IGNORE).sum())


def segment_positions(doc_ids: Tensor) -> Tensor:
    """(B, T) positions counted from 0 at the start of every run of equal doc ids."""
    B, T = doc_ids.shape
    cols = torch.arange(T).expand(B, T)
    starts = torch.ones_like(doc_ids, dtype=torch.bool)
    starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
    first = torch.where(starts, cols, torch.zeros_like(cols)).cummax(dim=1).values
    return cols - first


def objective_of(recipe) -> Objective | MTFObjective:
    """The recipe's objective: packed multitask rows with `data.mtf`, else token windows (causal,
    or prefix-LM with `model.attention=prefix_lm`)."""
    cfg = recipe.train
    if recipe.data.mtf:
        return MTFObjective(
            non_causal=recipe.model.attention == "prefix_lm", norm_target_loss=cfg.norm_target_loss
        )
    return Objective(
        prefix_lm=recipe.model.attention == "prefix_lm",
        seed=recipe.seed,
        loss_on_targets_only=cfg.loss_on_targets_only,
        reweight_by_position=cfg.reweight_loss_based_on_position_frequency,
    )


def heldout_loss(
    model: torch.nn.Module, objective: Objective | MTFObjective, batches: Iterable, device
) -> tuple[float, int]:
    """(sum of loss x weight, sum of weights) of the model over held-out batches, each built by
    the objective from the validation stream (prefix draws of their own) and scored by the
    model's own forward (the loss fused with the output projection, as in training); the
    held-out loss is the first over the second. `Trainer.validate` and `ablate` call it."""
    total, count, seen = torch.zeros((), dtype=torch.float64), 0, 0
    for samples in batches:
        rows = samples.shape[0]
        lm = objective.batch(samples, range(seen, seen + rows), stream=1).to(device)
        seen += rows
        loss = model(lm.inputs, **lm.forward_kwargs())
        n = objective.count(lm)
        total += loss.detach().double().cpu() * n
        count += n
    return float(total), count
