"""Pipeline parallelism with `torch.distributed.pipelining`: stages, schedules, tied embedding.

In: a full BloomLM, the pipeline rank and size, the number of virtual stages per rank and the
schedule name. Out: this rank's stage models (pruned copies of the BloomLM: parameter names, and
so checkpoints, stay those of the full model), their `PipelineStage`s and a schedule (GPipe,
1F1B, or interleaved 1F1B with several stages per rank).

Stages own contiguous blocks. The first stage embeds; the last applies the final LayerNorm and
the loss, fused with the output projection through the tied embedding, so with tied embeddings
(BLOOM) the embedding lives on the first and the last stage and its gradient is summed between
them after each backward (`sync_tied_embedding`), as Megatron does. BLOOM's partitioning counted
the embedding as a block (`--pp-partition-method type:transformer|embedding`):
`embedding_as_layer` reserves one block's share on the first and on the last stage for it.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from bloomforge.errors import BloomforgeError
from bloomforge.parallel.dims import local_part

SCHEDULES = ("gpipe", "1f1b", "interleaved_1f1b")


def stage_ranges(
    n_layer: int, n_stages: int, embedding_as_layer: bool = False
) -> list[tuple[int, int]]:
    """Blocks [start, end) of each stage, as even as possible (earlier stages take the rest)."""
    extra = 2 if embedding_as_layer else 0  # the embedding on the first and on the last stage
    units = n_layer + extra
    if n_stages > n_layer:
        raise BloomforgeError(f"{n_stages} pipeline stages for {n_layer} layers: too many stages")
    sizes = [units // n_stages + (1 if i < units % n_stages else 0) for i in range(n_stages)]
    if embedding_as_layer:
        sizes[0] -= 1
        sizes[-1] -= 1
    if min(sizes) < 1:
        raise BloomforgeError(
            f"{n_layer} layers over {n_stages} stages leaves a stage without a block"
        )
    out, start = [], 0
    for size in sizes:
        out.append((start, start + size))
        start += size
    return out


def stage_indices(pp_rank: int, pp: int, virtual: int) -> list[int]:
    """The stages a pipeline rank runs: one, or `virtual` of them in a loop (interleaved)."""
    return [pp_rank + v * pp for v in range(virtual)]


def build_stage_model(model: nn.Module, stage: int, ranges: list[tuple[int, int]]) -> nn.Module:
    """A copy of `model` keeping only what `stage` computes (same parameter names)."""
    first, last = stage == 0, stage == len(ranges) - 1
    part = copy.deepcopy(model)
    start, end = ranges[stage]
    for name in list(part.layers.keys()):
        if not start <= int(name) < end:
            del part.layers[name]
    if not first:
        part.pos_embeddings = None
        part.emb_norm = None
        if not (last and part.output is None):  # the last stage keeps the tied embedding
            part.tok_embeddings = None
    if not last:
        part.norm = None
        part.output = None
    return part


class PipelineRunner:
    """This rank's stages and schedule; `step` runs one global-batch slice through them."""

    def __init__(
        self,
        stage_models: list[nn.Module],
        stages: list[int],
        n_stages: int,
        device: torch.device,
        pp_group,
        schedule: str,
    ) -> None:
        if schedule not in SCHEDULES:
            raise BloomforgeError(f"parallel.pp_schedule={schedule!r}: choose one of {SCHEDULES}")
        if schedule != "interleaved_1f1b" and len(stages) > 1:
            raise BloomforgeError(
                "parallel.pp_virtual_stages > 1 needs parallel.pp_schedule=interleaved_1f1b"
            )
        self.models, self.stages, self.n_stages = stage_models, stages, n_stages
        self.device, self.group, self.schedule_name = device, pp_group, schedule
        self.loss_scale = 1.0
        self._schedules: dict[int, object] = {}

    @property
    def has_first(self) -> bool:
        return 0 in self.stages

    @property
    def has_last(self) -> bool:
        return self.n_stages - 1 in self.stages

    def _loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The last stage's forward already returned the micro-batch's mean loss (its `targets`
        # kwarg); weight it by the micro-batch's share of the global batch.
        return output * self.loss_scale

    def _schedule(self, n_micro: int):
        if n_micro not in self._schedules:
            from torch.distributed.pipelining import PipelineStage
            from torch.distributed.pipelining.schedules import (
                Schedule1F1B,
                ScheduleGPipe,
                ScheduleInterleaved1F1B,
            )

            pipe_stages = [
                PipelineStage(m, s, self.n_stages, self.device, group=self.group)
                for m, s in zip(self.models, self.stages, strict=True)
            ]
            if self.schedule_name == "interleaved_1f1b":
                sched = ScheduleInterleaved1F1B(
                    pipe_stages, n_micro, loss_fn=self._loss_fn, scale_grads=False
                )
            else:
                cls = ScheduleGPipe if self.schedule_name == "gpipe" else Schedule1F1B
                sched = cls(pipe_stages[0], n_micro, loss_fn=self._loss_fn, scale_grads=False)
            self._schedules[n_micro] = sched
        return self._schedules[n_micro]

    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor, n_micro: int, train: bool = True
    ) -> torch.Tensor:
        """Forward (and backward) of `n_micro` micro-batches; the sum of the scaled micro-batch
        losses on the rank holding the last stage, zero elsewhere."""
        sched = self._schedule(n_micro)
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.has_first else ()
        kwargs = {"targets": targets} if self.has_last else {}
        target = targets if self.has_last else None
        run = sched.step if train else sched.eval
        run(*args, target=target, losses=losses, return_outputs=False, **kwargs)
        if self.has_last:
            return torch.stack([loss.detach().float() for loss in losses]).sum()
        return torch.zeros((), device=self.device)


def tied_embedding_group(mesh):
    """A process group joining the first and last pipeline rank of each (dp, tp) position (all
    ranks must call this); None when one rank holds both ends."""
    ranks = mesh.mesh  # (pp, dp, tp) global ranks
    if ranks.shape[0] == 1:
        return None
    mine = None
    me = dist.get_rank()
    for d in range(ranks.shape[1]):
        for t in range(ranks.shape[2]):
            pair = [int(ranks[0, d, t]), int(ranks[-1, d, t])]
            group = dist.new_group(pair)
            if me in pair:
                mine = group
    return mine


@torch.no_grad()
def sync_tied_embedding(models: list[nn.Module], group) -> None:
    """Sum the tied embedding's gradient between its copies on the first and last stage."""
    if group is None:
        return
    for m in models:
        weight = getattr(m, "tok_embeddings", None)
        if weight is None or m.output is not None or weight.weight.grad is None:
            continue
        g = weight.weight.grad
        dist.all_reduce(local_part(g), group=group)
