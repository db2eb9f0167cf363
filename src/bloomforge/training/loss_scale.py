"""Dynamic loss scaling for `train.precision: fp16`, with the rules the small BLOOM models ran.

In: the loss of a step, then its gradients. Out: the scaled loss to backpropagate, the gradients
unscaled in place, whether any of them overflowed (the caller then skips the optimizer step, as
Megatron and DeepSpeed do), and the scale for the next step. bf16 and fp32 need none of this.

Which rule, and why. The fp16 BLOOM models (560m..7b1 were trained as tr11b/c/d/e/f in
bigscience-workshop/bigscience, train/tr11-176B-ml/smaller_models/*.slurm) ran Megatron-DeepSpeed
with `--deepspeed`. There `get_megatron_optimizer` returns the bare Adam (megatron/optimizer/
__init__.py line 91, `if args.deepspeed: return optimizer`), so Megatron's own
`DynamicGradScaler` never ran: DeepSpeed scaled the loss, from the slurm files' config block
(lines ~150-157 of each file)::

    "fp16": {"enabled": true, "loss_scale": 0, "loss_scale_window": 500, "hysteresis": 2,
             "min_loss_scale": 1, "initial_scale_power": 12}

DeepSpeed of that time (v0.6.5, May 2022) turns it into `DynamicLossScaler(init_scale=2**12,
scale_window=500, delayed_shift=2, min_scale=1)` (runtime/config.py, get_dynamic_loss_scale_args,
lines 180-210) with scale_factor 2 and consecutive_hysteresis False. This module implements that
class's `update_scale` (deepspeed/runtime/fp16/loss_scaler.py lines 151-170), with those values as
defaults:

- overflow: the window restarts. With hysteresis left (tracker > 1) the tracker drops by one and
  the scale stays; otherwise scale = max(scale * backoff, min_scale), and every later overflow
  backs off again until the tracker is refilled.
- clean step: after `window` clean steps in a row (counted since the last overflow or growth),
  scale *= growth and the hysteresis tracker is refilled. With `consecutive_hysteresis` any clean
  step refills it (so only that many overflows *in a row* back off).

Megatron's `DynamicGradScaler.update` (bigscience-workshop/Megatron-DeepSpeed, megatron/optimizer/
grad_scaler.py lines 99-119; growth 2.0 and backoff 0.5 from optimizer/__init__.py lines 117-118)
gives the same sequence: its tracker goes 2, 1, 0, -1, ... and backs off at <= 0 where
DeepSpeed's stops at 1 and backs off at == 1; its growth tracker counts the clean steps that
DeepSpeed derives as (iter - last_overflow_iter) % window. Where they differ:

- at min_scale DeepSpeed raises on the next backoff ("Current loss scale already at minimum",
  raise_error_at_min_scale=True); Megatron stays at the floor and keeps skipping steps. Default
  here: Megatron's floor; `raise_at_min_scale=True` gives DeepSpeed's stop.
- Megatron's command-line defaults differ: --initial-loss-scale 2**32, --loss-scale-window 1000,
  --min-loss-scale 1, --hysteresis 2 (megatron/arguments.py lines 682-693).
- the BLOOM slurm runs at ZeRO stage 0 (the first segments; the *-continuation.slurm files use
  stage 1, which does build `DynamicLossScaler`, zero/stage_1_and_2.py lines 499-502) went
  through FP16_Optimizer, which keeps its own rule (fp16/fused_optimizer.py `_update_scale`, lines
  374-401): no hysteresis at all, and its first growth comes after window + 1 clean steps, the
  later ones every window. `hysteresis=1` reproduces its backoffs, not that off-by-one.

A static scale (DeepSpeed's `"loss_scale": N > 0`, Megatron's --loss-scale N) never changes.

Unscaling follows Megatron's `_unscale_main_grads_and_check_for_nan` (optimizer.py lines 315-339):
multiply by 1/scale in place, one found-inf flag, all-reduced with MAX over the given process
group, one host sync. DTensor gradients are handled through their local shard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from bloomforge.parallel.dims import local_part

# BLOOM small models' DeepSpeed "fp16" block (tr11*-ml.slurm): initial_scale_power 12,
# loss_scale_window 500, hysteresis 2, min_loss_scale 1; DeepSpeed's scale_factor 2.
DEFAULT_INITIAL_SCALE = 2.0**12
DEFAULT_WINDOW = 500
DEFAULT_HYSTERESIS = 2
DEFAULT_MIN_SCALE = 1.0

_STATE_KEYS = ("scale", "growth_tracker", "hysteresis_tracker")


class LossScaleAtMinimumError(FloatingPointError):
    """Gradients overflowed while the scale was already at its floor (DeepSpeed stops here)."""


class LossScaler:
    """A dynamic (default) or static loss scale for fp16 training.

    One step: ``scale_loss(loss).backward()``; ``found_inf = unscale_and_check(grads)``; step the
    optimizer only when not ``found_inf``; ``update(found_inf)``.
    """

    def __init__(
        self,
        *,
        initial_scale: float = DEFAULT_INITIAL_SCALE,
        window: int = DEFAULT_WINDOW,
        hysteresis: int = DEFAULT_HYSTERESIS,
        min_scale: float = DEFAULT_MIN_SCALE,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        static_scale: float | None = None,
        consecutive_hysteresis: bool = False,
        raise_at_min_scale: bool = False,
    ) -> None:
        """Args:
        initial_scale: first scale (DeepSpeed: 2**initial_scale_power; Megatron:
            --initial-loss-scale).
        window: clean steps in a row before the scale grows (DeepSpeed: loss_scale_window;
            Megatron: --loss-scale-window, growth_interval).
        hysteresis: overflows tolerated before the scale backs off (DeepSpeed: hysteresis
            / delayed_shift; Megatron: --hysteresis). 1 backs off at every overflow.
        min_scale: floor of the scale (DeepSpeed: min_loss_scale; Megatron: --min-loss-scale).
        growth_factor, backoff_factor: scale *= growth after a clean window, *= backoff on an
            overflow beyond the hysteresis (both runs: 2 and 1/2).
        static_scale: a fixed scale; the dynamic arguments are then unused (DeepSpeed:
            loss_scale > 0; Megatron: --loss-scale).
        consecutive_hysteresis: a clean step refills the hysteresis (DeepSpeed's option; off in
            the BLOOM runs).
        raise_at_min_scale: an overflow that would back off a scale already at min_scale raises
            `LossScaleAtMinimumError` (DeepSpeed) instead of keeping the floor (Megatron).
        """
        if static_scale is not None:
            _check(static_scale > 0 and math.isfinite(static_scale), "static_scale", static_scale)
            initial_scale = static_scale
        _check(initial_scale > 0 and math.isfinite(initial_scale), "initial_scale", initial_scale)
        _check(_positive_int(window), "window", window, "a positive integer")
        _check(_positive_int(hysteresis), "hysteresis", hysteresis, "a positive integer")
        if static_scale is None:  # a static scale may sit below the (unused) floor
            _check(0 < min_scale <= initial_scale, "min_scale", min_scale, f"<= {initial_scale}")
        _check(growth_factor > 1, "growth_factor", growth_factor, "> 1")
        _check(0 < backoff_factor < 1, "backoff_factor", backoff_factor, "in (0, 1)")
        self.dynamic = static_scale is None
        self.window = window
        self.hysteresis = hysteresis
        self.min_scale = float(min_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.consecutive_hysteresis = consecutive_hysteresis
        self.raise_at_min_scale = raise_at_min_scale
        self._scale = float(initial_scale)
        # Clean steps since the last overflow or growth (Megatron's _growth_tracker).
        self._growth_tracker = 0
        # Overflows still tolerated, counting this one, before a backoff: hysteresis .. 1
        # (DeepSpeed's cur_hysteresis).
        self._hysteresis_tracker = hysteresis

    @property
    def scale(self) -> float:
        return self._scale

    def scale_loss(self, loss: Tensor) -> Tensor:
        """`loss * scale`, computed in float32 (as DeepSpeed's `loss.float() * cur_scale`) so a
        scale beyond fp16's range overflows in the gradients, where `unscale_and_check` sees it,
        not in the loss itself."""
        return loss.float() * self._scale

    def unscale_and_check(
        self, grads: Iterable[Tensor | None], group: dist.ProcessGroup | None = None
    ) -> bool:
        """Multiply every gradient by 1/scale in place; True when any is inf or nan.

        `grads` may hold plain tensors, DTensors (their local shard is unscaled and checked) and
        None (skipped). With `group` (e.g. `dist.group.WORLD`, or the mesh's group), the flag is
        all-reduced with MAX so every rank in it agrees on skipping the step; without it, each
        rank decides from its own gradients. One host sync either way.
        """
        inv_scale = 1.0 / self._scale
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for g in grads:
            if g is None:
                continue
            local = local_part(g)
            if local.numel():  # FSDP shards can be empty on some ranks
                by_kind.setdefault((local.device, local.dtype), []).append(local)

        flags: list[Tensor] = []
        for tensors in by_kind.values():
            torch._foreach_mul_(tensors, inv_scale)
            # max |g| is inf or nan exactly when some element is (unlike a sum or 2-norm, it
            # cannot overflow on finite fp16 values); checked after unscaling so a scale < 1
            # that pushes a gradient out of range is caught too.
            maxes = torch.stack(torch._foreach_norm(tensors, math.inf))
            flags.append(torch.logical_not(torch.isfinite(maxes).all()))

        device = next(iter(by_kind))[0] if by_kind else _flag_device(group)
        found = torch.zeros((), dtype=torch.float32, device=device)
        for flag in flags:
            found = torch.maximum(found, flag.to(device=device, dtype=torch.float32))
        if group is not None:
            dist.all_reduce(found, op=dist.ReduceOp.MAX, group=group)
        return bool(found.item() > 0)

    def update(self, found_inf: bool) -> None:
        """The next scale after a step that did (skipped) or did not overflow."""
        if not self.dynamic:
            return
        if found_inf:
            self._growth_tracker = 0
            if self._hysteresis_tracker > 1:
                self._hysteresis_tracker -= 1
                return
            if self.raise_at_min_scale and self._scale <= self.min_scale:
                raise LossScaleAtMinimumError(
                    f"bloomforge: fp16 gradients overflow at the minimum loss scale "
                    f"({self.min_scale:g}); the run has diverged (lower the learning rate, resume "
                    f"from an earlier checkpoint, or train in bf16)"
                )
            self._scale = max(self._scale * self.backoff_factor, self.min_scale)
            return
        self._growth_tracker += 1
        if self.consecutive_hysteresis:
            self._hysteresis_tracker = self.hysteresis
        if self._growth_tracker == self.window:
            self._growth_tracker = 0
            self._hysteresis_tracker = self.hysteresis
            self._scale *= self.growth_factor

    def state_dict(self) -> dict[str, float | int]:
        """Everything `update` reads besides the constructor's arguments (Megatron's keys)."""
        return {
            "scale": self._scale,
            "growth_tracker": self._growth_tracker,
            "hysteresis_tracker": self._hysteresis_tracker,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`'s counters. A static scaler keeps its configured scale (the
        recipe wins on resume, as with Megatron's ConstantGradScaler)."""
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise KeyError(f"bloomforge: loss scaler state has no {', '.join(missing)}")
        if not self.dynamic:
            return
        self._scale = float(state["scale"])  # also a 1-element tensor (Megatron's checkpoints)
        self._growth_tracker = int(state["growth_tracker"])
        # Megatron's tracker keeps counting below 1 after a backoff; ours stops at 1.
        self._hysteresis_tracker = max(1, int(state["hysteresis_tracker"]))


def _check(ok: bool, name: str, value: object, want: str = "a positive number") -> None:
    if not ok:
        raise ValueError(f"bloomforge: loss scale {name} must be {want}, got {value!r}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _flag_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where the found-inf flag lives when this rank has no gradient: NCCL wants CUDA."""
    if group is not None and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
