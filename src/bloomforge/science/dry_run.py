"""`train --dry-run`: what a recipe will do, without data or training.

In: a recipe. Out: parameters, FLOPs per token and for the run, memory per GPU by component
(bloomforge.science.memory), steps, the batch-size schedule (rampup milestones) and the lr at a
few points, as a dict and as text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bloomforge.model.flops import count_params, train_flops_per_token
from bloomforge.recipe import Recipe
from bloomforge.science.memory import Layout, estimate_memory
from bloomforge.training.schedule import BatchRampup, learning_rate


def describe_run(recipe: Recipe, world_size: int = 1) -> dict[str, Any]:
    cfg, model, seq = recipe.train, recipe.model, recipe.data.seq_len
    max_tokens = cfg.max_tokens if cfg.max_tokens is not None else cfg.decay_tokens
    rampup = BatchRampup.from_config(
        cfg.global_batch_size, cfg.micro_batch_size, world_size, cfg.rampup_batch_size
    )
    steps, schedule = rampup.plan(seq, max_tokens)
    per_token = train_flops_per_token(model, seq, recompute=cfg.activation_checkpointing)
    model_per_token = train_flops_per_token(model, seq)
    lr_kw = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name in ("lr", "min_lr", "warmup_tokens", "decay_tokens", "schedule")
    }
    layout = Layout(
        tp=recipe.parallel.tp,
        pp=recipe.parallel.pp,
        dp=world_size,
        micro_batch=cfg.micro_batch_size,
        seq_len=seq,
        recompute="full" if cfg.activation_checkpointing else "none",
    )
    memory = estimate_memory(model, layout)
    lr_points = sorted({0, cfg.warmup_tokens, max_tokens // 2, max_tokens})
    return {
        "parameters": count_params(model).total,
        "seq_len": seq,
        "max_tokens": max_tokens,
        "steps": steps,
        "model_flops_per_token": model_per_token,
        "hardware_flops_per_token": per_token,
        "total_model_flops": model_per_token * max_tokens,
        "batch_schedule": schedule,
        "memory_gib": {
            k: v / 2**30
            for k, v in memory.to_dict().items()
            if k in ("weights", "gradients", "optimizer", "activations", "total")
        },
        "micro_batches_per_step": rampup.num_micro_batches(10**18),
        "lr": {
            str(t): learning_rate(t, wsd_decay_tokens=cfg.wsd_decay_tokens, **lr_kw)
            for t in lr_points
        },
    }


def format_run(info: dict[str, Any]) -> str:
    lines = [
        f"parameters         {info['parameters']:,}",
        f"sequence length    {info['seq_len']}",
        f"tokens             {info['max_tokens']:,}",
        f"steps              {info['steps']:,}",
        f"model FLOPs/token  {info['model_flops_per_token']:.4g} "
        f"(hardware {info['hardware_flops_per_token']:.4g})",
        f"total model FLOPs  {info['total_model_flops']:.4g}",
        "memory per GPU     "
        + ", ".join(f"{k} {v:.2f} GiB" for k, v in info["memory_gib"].items())
        + " (mixed-precision Adam, 16 bytes/param; science.memory)",
        "batch schedule:",
    ]
    sched = info["batch_schedule"]
    shown = sched if len(sched) <= 8 else [*sched[:4], None, *sched[-3:]]
    for s in shown:
        lines.append(
            "  ..."
            if s is None
            else f"  from step {s['from_step']:,} (sample {s['from_samples']:,}): "
            f"batch {s['batch_size']}"
        )
    lines.append(
        "lr: " + ", ".join(f"{float(t):.3g} tok -> {v:.3g}" for t, v in info["lr"].items())
    )
    return "\n".join(lines)
