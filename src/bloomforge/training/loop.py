"""The training loop: one plain `while` over global batches, as Megatron-DeepSpeed ran BLOOM.

In: a resolved recipe (data.tokens, model, train) and a run folder. Out: in the run folder,
config.yaml (the resolved recipe), checkpoints/step_N/ (every train.save_every steps and at
exit), metrics.jsonl, tb/ and, when codecarbon is installed, emissions.csv.

Per step: the global batch size from the rampup (samples consumed so far), that many samples
from the mixture loader, split into micro-batches with gradient accumulation; the loss is the
mean over every target token of the global batch; gradients are clipped; the step is skipped
(counted, logged, the run goes on) on a non-finite loss or gradient, a grad-norm spike, or a
user skip range. The lr follows the schedule in tokens. A kill-switch file, the time limit,
SIGTERM and SIGINT save a checkpoint and stop cleanly; `resume=True` continues from the newest
valid checkpoint, bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import signal
import statistics
import time
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bloomforge.checkpoint import Checkpointer, fault_point, first_non_finite, restore_rng
from bloomforge.data.loader import MixtureLoader
from bloomforge.devices import resolve_device
from bloomforge.errors import BloomforgeError, RunStopped
from bloomforge.model import BloomLM
from bloomforge.model.config import check_vocab
from bloomforge.model.flops import count_params, train_flops_per_token
from bloomforge.parallel.apply import LOW_PRECISION, parallelize
from bloomforge.parallel.dims import ParallelDims, build_mesh
from bloomforge.parallel.env import init_single_process_group
from bloomforge.recipe import Recipe, save_recipe
from bloomforge.tokenizer import find_tokenizer_file, load_tokenizer
from bloomforge.training.loss_scale import LossScaler
from bloomforge.training.metrics import (
    MetricsLog,
    device_peak_tflops,
    peak_memory_gb,
    progress_line,
)
from bloomforge.training.objective import LMBatch, heldout_loss, objective_of
from bloomforge.training.optim import build_optimizer
from bloomforge.training.schedule import BatchRampup, learning_rate, parse_skip_ranges
from bloomforge.training.zero_shot import check_supported as check_zero_shot


def _tokenizer_of(recipe: Recipe) -> Path:
    """The tokenizer: the recipe's, else the copy stored beside the token shards."""
    if recipe.tokenizer.path:
        found = find_tokenizer_file(recipe.tokenizer.path)
        if found is None:
            raise BloomforgeError(
                f"tokenizer.path={recipe.tokenizer.path}: no tokenizer.json there"
            )
        return found
    if recipe.data.mtf:
        raise BloomforgeError("data.mtf: set tokenizer.path (or init=, whose tokenizer is used)")
    found = find_tokenizer_file(recipe.data.tokens)
    if found is None:
        raise BloomforgeError(
            f"data.tokens={recipe.data.tokens} holds no tokenizer.json: set tokenizer.path"
        )
    return found


def prepare_recipe(recipe: Recipe) -> Recipe:
    """Check what training needs and let the tokenizer decide the vocabulary (as Megatron does);
    with `init`, the model's shape and the tokenizer come from the init."""
    data = recipe.data
    if not data.tokens and not data.mtf:
        raise BloomforgeError(
            "data.tokens is not set (a folder from `bloomforge data tokenize`; or data.mtf, "
            "a folder from `bloomforge mtf build`, to finetune)"
        )
    if data.tokens and not Path(data.tokens).is_dir():
        raise BloomforgeError(
            f"data.tokens={data.tokens}: no such folder (run `bloomforge data tokenize`)"
        )
    if data.mtf and not Path(data.mtf).exists():
        raise BloomforgeError(f"data.mtf={data.mtf}: no such folder (run `bloomforge mtf build`)")
    if not recipe.out:
        raise BloomforgeError("out is not set (the run folder), e.g. out=runs/t1")
    if Path(recipe.out).exists() and not Path(recipe.out).is_dir():
        raise BloomforgeError(f"out={recipe.out}: is a file, not a run folder")
    train = recipe.train
    if train.max_tokens is None:
        train = dataclasses.replace(train, max_tokens=train.decay_tokens)
    if recipe.init:
        from bloomforge.training import init as init_mod

        model = init_mod.merge_model(
            recipe.model, init_mod.init_model_config(recipe.init), recipe.init
        )
        tokenizer = recipe.tokenizer
        if not tokenizer.path:
            found = init_mod.init_tokenizer(recipe.init)
            if found is None:
                raise BloomforgeError(
                    f"init={recipe.init} has no tokenizer.json: set tokenizer.path"
                )
            tokenizer = dataclasses.replace(tokenizer, path=str(found))
        recipe = dataclasses.replace(recipe, model=model, tokenizer=tokenizer, train=train)
        file = _tokenizer_of(recipe)
        check_vocab(load_tokenizer(file), model, file)
        return recipe
    n_vocab = load_tokenizer(_tokenizer_of(recipe)).get_vocab_size()
    model = dataclasses.replace(recipe.model, vocab_size=n_vocab)
    return dataclasses.replace(recipe, model=model, train=train)


class Trainer:
    def __init__(self, recipe: Recipe, resume: bool = False, rank: int = 0, world_size: int = 1):
        self.recipe = recipe = prepare_recipe(recipe)
        self.cfg = cfg = recipe.train
        self.run = Path(recipe.out)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(resolve_device(cfg.device, "train.device"))
        if self.device.type == "cuda" and self.device.index is None:
            # the GPU torchrun's LOCAL_RANK selected (env.init_distributed), with its index:
            # pipeline stages and the mesh need an explicit device
            self.device = torch.device("cuda", torch.cuda.current_device())
        p = recipe.parallel
        self.dims = ParallelDims.from_config(p.dp, p.tp, p.pp, world_size)
        self.mesh = None
        if world_size > 1 or cfg.precision in LOW_PRECISION:
            # bf16 / fp16 run through FSDP2's mixed precision on every layout, a single
            # process included (a one-rank group), so 1 and N processes compute alike.
            if world_size == 1:
                init_single_process_group(self.device)
            self.mesh = build_mesh(self.dims, self.device.type)
        self.dp_rank = self.mesh["dp"].get_local_rank() if self.mesh is not None else 0
        self.seq_len = recipe.data.seq_len
        _check_supported(recipe, self.device)
        check_zero_shot(recipe)
        self.mtf = recipe.data.mtf is not None
        self.objective = objective_of(recipe)
        if self.seq_len > recipe.model.max_seq_len and recipe.model.position in ("learned",):
            raise BloomforgeError(
                f"data.seq_len {self.seq_len} > model.max_seq_len {recipe.model.max_seq_len}"
            )
        self.rampup = BatchRampup.from_config(
            cfg.global_batch_size, cfg.micro_batch_size, self.dims.dp, cfg.rampup_batch_size
        )
        self.skip_ranges = parse_skip_ranges(cfg.skip_ranges)
        self.total_steps, _ = self.rampup.plan(self.seq_len, cfg.max_tokens)
        self.tokenizer_file = _tokenizer_of(recipe)
        self.loader = self._build_loader()
        if self.loader.vocab_size > recipe.model.padded_vocab_size:
            raise BloomforgeError(
                f"token folder vocabulary {self.loader.vocab_size} exceeds the "
                f"model's {recipe.model.padded_vocab_size}"
            )
        # Counters; all restored at resume.
        self.step = self.samples = self.tokens = self.skipped = 0
        self.consecutive_skips = 0
        self.skip_reasons: dict[str, int] = {}
        self.norms: deque[float] = deque(maxlen=max(1, cfg.spike_window))

        self.checkpoints = Checkpointer(self.run, keep_last=cfg.keep_last)
        if rank == 0:
            self.checkpoints.remove_interrupted_saves()
        existing = self.checkpoints.folders()
        if existing and not resume:
            raise BloomforgeError(
                f"{self.run} already has checkpoints; pass --resume or choose another out="
            )
        self.resumed_from = self.checkpoints.newest_valid() if resume else None
        if resume and existing and self.resumed_from is None:
            raise BloomforgeError(f"{self.run}: no checkpoint passes its checksums")
        torch.manual_seed(recipe.seed)
        # Every rank builds the whole model from the seed, so any layout starts from the very
        # weights a single process would, then keeps its own part (shards, heads, stages).
        model = BloomLM.build(recipe.model, device=self.device, seed=recipe.seed)
        model.train()
        par = parallelize(model, self.dims, self.mesh, recipe.parallel, cfg, self.device)
        self.parts, self.pipeline, self.fsdp = par.parts, par.runner, par.fsdp
        self.model = self.parts[0]
        self.optimizers = [build_optimizer(part, cfg) for part in self.parts]
        self.scaler = None
        if cfg.precision == "fp16":
            self.scaler = LossScaler(
                initial_scale=2.0**cfg.initial_scale_power,
                window=cfg.loss_scale_window,
                hysteresis=cfg.hysteresis,
                min_scale=cfg.min_loss_scale,
                static_scale=cfg.loss_scale or None,
            )
        self._clip_params = self._clip_param_lists()
        self._tied_group = None
        if self.pipeline is not None:
            from bloomforge.parallel.pipeline import tied_embedding_group

            self._tied_group = tied_embedding_group(self.mesh)
        if self.resumed_from is None and recipe.init:
            from bloomforge.training.init import load_init_weights

            load_init_weights(self.parts, recipe.model, recipe.init)
        if self.resumed_from is not None:
            self.checkpoints.load(self.resumed_from, self.parts, self.optimizers)
            bad = self._non_finite_weight()
            if bad is not None:
                raise BloomforgeError(
                    f"{self.resumed_from / 'model.safetensors'}: '{bad}' contains NaN or inf "
                    "(its checksum matches: it was saved so); resume from an earlier checkpoint"
                )
            self._load_trainer_state(self.checkpoints.read_trainer_state(self.resumed_from))
            if not restore_rng(self.checkpoints.read_rng(self.resumed_from), rank, world_size):
                warnings.warn(
                    f"{self.resumed_from} was written by another number of ranks: every rank "
                    "continues from rank 0's random state",
                    stacklevel=2,
                )
        if rank == 0:
            self.run.mkdir(parents=True, exist_ok=True)
            save_recipe(recipe, self.run / "config.yaml")
        self.flops_per_token = train_flops_per_token(recipe.model, self.seq_len)
        self.peak_tflops = cfg.peak_tflops or device_peak_tflops(self.device)
        self._stop_reason: str | None = None
        self._last_saved: Path | None = None

    # -- set-up -------------------------------------------------------------------------------
    @functools.cached_property
    def tokenizer(self):
        """The run's tokenizer, loaded once (multitask rows, in-loop evaluation)."""
        return load_tokenizer(self.tokenizer_file)

    def _build_loader(self):
        recipe = self.recipe
        data = recipe.data
        if self.mtf:
            from bloomforge.mtf.loader import MTFLoader

            return MTFLoader(
                data.mtf,
                self.tokenizer,
                self.seq_len,
                seed=recipe.seed,
                weights=data.weights,
                alpha=data.alpha,
                valid_fraction=data.valid_fraction,
                packing=data.packing,
            )
        return MixtureLoader(
            data.tokens,
            self.seq_len,
            seed=recipe.seed,
            group_by=data.group_by,
            weights=data.weights,
            alpha=data.alpha,
            valid_fraction=data.valid_fraction,
        )

    def _load_trainer_state(self, state: dict[str, Any]) -> None:
        self.step, self.samples = state["step"], state["samples"]
        self.consecutive_skips = state.get("consecutive_skips", 0)
        self.tokens, self.skipped = state["tokens"], state["skipped"]
        self.skip_reasons = dict(state.get("skip_reasons", {}))
        self.norms.extend(state.get("grad_norms", []))
        self.loader.load_state_dict(state["loader"])
        if self.scaler is not None and "loss_scaler" in state:
            self.scaler.load_state_dict(state["loss_scaler"])

    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "samples": self.samples,
            "tokens": self.tokens,
            "skipped": self.skipped,
            "consecutive_skips": self.consecutive_skips,
            "skip_reasons": self.skip_reasons,
            "grad_norms": list(self.norms),
            "loader": self.loader.state_dict(),
            **({"loss_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    # -- one step -----------------------------------------------------------------------------
    def _loss(self, batch: LMBatch) -> tuple[Tensor, int]:
        """Mean loss of one micro-batch and its number of target positions."""
        batch = batch.to(self.device)
        # The loss is computed inside the model's forward (fused with the output projection),
        # where FSDP has the tied embedding gathered.
        loss = self.model(batch.inputs, **batch.forward_kwargs())
        return loss, batch.targets.numel()

    @property
    def _loss_scale(self) -> float:
        return self.scaler.scale if self.scaler is not None else 1.0

    def _forward_backward(self, batch: Tensor, global_batch: int, first_sample: int) -> Tensor:
        """Accumulate gradients over this rank's micro-batches. Each micro-batch's loss (the
        mean over its counted targets) is weighted by its share of the global batch's target
        positions, so the sum over micro-batches and data-parallel ranks (FSDP reduces by sum)
        is the global mean, Megatron's mean of micro-batch losses when some targets do not
        count (prefix-LM). Returns this rank's part of the loss."""
        mbs = self.cfg.micro_batch_size
        total = global_batch * self.seq_len
        if self.pipeline is not None:
            n_micro = batch.shape[0] // mbs
            self.pipeline.loss_scale = mbs * self.seq_len / total * self._loss_scale
            inputs = batch[:, :-1].to(self.device)
            targets = batch[:, 1:].to(self.device)
            return self.pipeline.step(inputs, targets, n_micro) / self._loss_scale
        ids = range(first_sample, first_sample + batch.shape[0])
        loss_sum = torch.zeros((), device=self.device)
        for micro in self.objective.batch(batch, ids).split(mbs):
            loss, n = self._loss(micro)
            weighted = loss * (n / total)
            (weighted.float() * self._loss_scale if self.scaler else weighted).backward()
            loss_sum += weighted.detach().float()
        return loss_sum

    def _sum_over_ranks(self, value: Tensor) -> Tensor:
        """Add up a per-rank partial value over data-parallel ranks and pipeline stages."""
        if self.mesh is None:
            return value
        import torch.distributed as dist

        for dim in ("dp", "pp"):
            if self.mesh[dim].size() > 1:
                dist.all_reduce(value, group=self.mesh[dim].get_group())
        return value

    def _clip(self) -> Tensor:
        if self.mesh is None:
            return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        from bloomforge.parallel.grads import clip_grad_norm
        from bloomforge.parallel.pipeline import sync_tied_embedding
        from bloomforge.parallel.tensor import sync_replicated_grads

        if self.dims.tp > 1:
            for part in self.parts:
                sync_replicated_grads(part, self.mesh["tp"].get_group())
        sync_tied_embedding(self.parts, self._tied_group)
        params, counted = self._clip_params
        return clip_grad_norm(params, counted, self.cfg.clip_grad, self.mesh, self.device)

    def _clip_param_lists(self) -> tuple[list[Tensor], list[Tensor]]:
        """All of this rank's parameters, and those its gradient norm counts: the tied
        embedding's copy on the last pipeline stage is counted on the first."""
        stages = self.pipeline.stages if self.pipeline is not None else [0]
        params, counted = [], []
        for part, stage in zip(self.parts, stages, strict=True):
            for name, param in part.named_parameters():
                params.append(param)
                if not (stage > 0 and name == "tok_embeddings.weight"):
                    counted.append(param)
        return params, counted

    def _guard(self, loss: float, norm: float) -> str | None:
        """Why this step must be skipped, or None."""
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return "non-finite loss or gradient"
        if self.cfg.spike_factor > 0 and len(self.norms) >= min(10, self.norms.maxlen):
            median = statistics.median(self.norms)
            if norm > self.cfg.spike_factor * median:
                return f"grad norm spike ({norm:.3g} > {self.cfg.spike_factor} x {median:.3g})"
        return None

    def _unscale_overflowed(self) -> bool:
        """fp16: divide every gradient by the loss scale; True when one overflowed on any rank
        (Megatron's _unscale_main_grads_and_check_for_nan)."""
        params, _ = self._clip_params
        group = None if self.mesh is None else torch.distributed.group.WORLD
        return self.scaler.unscale_and_check((p.grad for p in params), group=group)

    def _in_skip_range(self, step: int) -> bool:
        return any(a <= step <= b for a, b in self.skip_ranges)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (or a skipped one); returns the step's metrics."""
        self.step += 1
        bs = self.rampup.batch_size(self.samples)
        batch = self.loader.next_batch(bs, self.dp_rank, self.dims.dp)
        first_sample = self.samples + self.dp_rank * (bs // self.dims.dp)  # global index of row 0
        step_tokens = bs * self.seq_len
        # The lr of this update: the schedule at the tokens seen once this batch is consumed
        # (Megatron evaluates it before counting the batch, which makes the first step lr 0).
        lr = learning_rate(
            self.tokens + step_tokens,
            lr=self.cfg.lr,
            min_lr=self.cfg.min_lr,
            warmup_tokens=self.cfg.warmup_tokens,
            decay_tokens=self.cfg.decay_tokens,
            schedule=self.cfg.schedule,
            wsd_decay_tokens=self.cfg.wsd_decay_tokens,
        )
        metrics: dict[str, Any] = {"lr": lr, "batch_size": bs, "loss": None, "grad_norm": None}
        if self.mtf:  # share of this rank's row tokens that are samples, not padding
            metrics["packing"] = batch.real_tokens / batch.tokens.numel()
        reason = None
        if self._in_skip_range(self.step):
            reason = "train.skip_ranges"
        else:
            for opt in self.optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
            loss = self._sum_over_ranks(self._forward_backward(batch, bs, first_sample))
            if self.scaler is not None:
                metrics["loss_scale"] = self.scaler.scale
            if self.scaler is not None and self._unscale_overflowed():
                metrics["loss"] = loss.item()
                reason = f"fp16 gradient overflow (loss scale {self.scaler.scale:g})"
                self.scaler.update(True)
            else:
                norm = self._clip()
                loss_v, norm_v = torch.stack([loss, norm.float()]).tolist()  # one sync
                metrics.update(loss=loss_v, grad_norm=norm_v)
                reason = self._guard(loss_v, norm_v)
                if self.scaler is not None:
                    self.scaler.update(False)
            if reason is None:
                for opt in self.optimizers:
                    opt.step()
                self.norms.append(norm_v)
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
        if reason is None or reason == "train.skip_ranges":
            self.consecutive_skips = 0  # a user's skip range is not a failure to learn
        else:
            self.consecutive_skips += 1
        if reason is not None:
            self.skipped += 1
            kind = reason.split(" (")[0]  # counted by kind, without the step's numbers
            self.skip_reasons[kind] = self.skip_reasons.get(kind, 0) + 1
            metrics["skip_reason"] = reason
        self.samples += bs
        self.tokens += step_tokens
        metrics.update(samples=self.samples, tokens=self.tokens, skipped=self.skipped)
        return metrics

    # -- validation ---------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, dict[str, float]]:
        """Loss and perplexity per group on the held-out split (every rank evaluates the same
        batches, so sharded layouts need no extra reduction)."""
        for part in self.parts:
            part.eval()
        out = {}
        for group in self.loader.groups:
            if self.pipeline is not None:
                total, count = self._pipeline_heldout(group)
            else:
                batches = self.loader.validation_batches(
                    group, self.cfg.micro_batch_size, self.cfg.eval_samples
                )
                total, count = heldout_loss(self.model, self.objective, batches, self.device)
            if count:
                mean = float(total / count)
                out[group] = {"loss": mean, "ppl": math.exp(min(mean, 50.0)), "tokens": count}
        for part in self.parts:
            part.train()
        return out

    def _pipeline_heldout(self, group: str) -> tuple[float, int]:
        """`heldout_loss` through the pipeline schedule: its stages run the model in parts."""
        total, count = torch.zeros((), dtype=torch.float64), 0
        n_micro = self.pipeline.n_stages  # at least as many micro-batches as stages
        for batch in self.loader.validation_batches(
            group, self.cfg.micro_batch_size * n_micro, self.cfg.eval_samples
        ):
            if batch.shape[0] % n_micro:
                continue  # a short last batch cannot be cut into the stages' count
            self.pipeline.loss_scale = 1.0 / n_micro
            inputs, targets = batch[:, :-1].to(self.device), batch[:, 1:].to(self.device)
            loss = self.pipeline.step(inputs, targets, n_micro, train=False)
            if self.mesh["pp"].size() > 1:
                import torch.distributed as dist

                dist.all_reduce(loss, group=self.mesh["pp"].get_group())
            total += loss.double().cpu() * targets.numel()
            count += targets.numel()
        return float(total), count

    # -- checkpoints --------------------------------------------------------------------------
    def _non_finite_weight(self) -> str | None:
        """The name of a weight holding NaN or inf on any rank (agreed by all), else None."""
        bad = first_non_finite(p for part in self.parts for p in part.named_parameters())
        if bad:
            bad = bad.replace("_checkpoint_wrapped_module.", "").replace("_orig_mod.", "")
        if self.mesh is not None:
            import torch.distributed as dist

            flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and bad is None:
                bad = "a weight held by another rank"
        return bad

    def save(self) -> Path:
        bad = self._non_finite_weight()
        if bad is not None:
            newest = self.checkpoints.newest()
            keep = f"; the newest checkpoint stays {newest}" if newest else ""
            raise RunStopped(
                f"refusing to save step {self.step}: '{bad}' contains NaN or inf{keep}"
            )
        path = self.checkpoints.save(
            self.step,
            self.parts,
            self.optimizers,
            self.recipe,
            self.trainer_state(),
            self.tokenizer_file,
            distributed=self.mesh is not None,
        )
        self._last_saved = path
        return path

    # -- the loop -----------------------------------------------------------------------------
    def _request_stop(self, signum: int, frame: Any) -> None:
        self._stop_reason = signal.Signals(signum).name

    def _should_stop(self, started: float) -> str | None:
        """Why to stop now, agreed by every rank (one rank seeing the kill switch stops all)."""
        reason = self._local_stop_reason(started)
        if self.mesh is None:
            return reason
        import torch.distributed as dist

        flag = torch.tensor([1.0 if reason else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return reason or ("stop requested by another rank" if flag.item() else None)

    def _local_stop_reason(self, started: float) -> str | None:
        if self._stop_reason:
            return self._stop_reason
        if self.cfg.kill_switch and Path(self.cfg.kill_switch).exists():
            return f"kill switch {self.cfg.kill_switch}"
        limit = self.cfg.exit_duration_mins
        if limit is not None and time.monotonic() - started > 60 * limit:
            return f"time limit of {limit} min"
        return None

    def fit(self) -> dict[str, Any]:
        """Train until train.max_tokens (or a stop request); returns a summary."""
        cfg = self.cfg
        resume_step = self.step if self.resumed_from is not None else None
        log = MetricsLog(self.run, resume_step=resume_step, enabled=self.rank == 0)
        old_handlers = {
            s: signal.signal(s, self._request_stop) for s in (signal.SIGTERM, signal.SIGINT)
        }
        tracker = _carbon_tracker(self.run, cfg.carbon_country) if self.rank == 0 else None
        n_params = count_params(self.recipe.model).total
        if self.resumed_from is not None:
            log.info(f"resumed from {self.resumed_from} (step {self.step}, {self.tokens} tokens)")
        log.info(
            f"training {n_params:,} parameters on {self.device}, {self.total_steps} steps, "
            f"{cfg.max_tokens:,} tokens; run folder {self.run}"
        )
        started = time.monotonic()
        window_start, window_tokens = time.perf_counter(), 0
        last: dict[str, Any] = {}
        stop = None
        finished_before = self.resumed_from is not None and self.tokens >= cfg.max_tokens
        try:
            while self.tokens < cfg.max_tokens:
                metrics = self.train_step()
                fault_point("step", self.step)
                self._check_can_learn(metrics)
                window_tokens += metrics["batch_size"] * self.seq_len
                if self.step % cfg.log_every == 0 or self.tokens >= cfg.max_tokens:
                    now = time.perf_counter()
                    tps = window_tokens / max(now - window_start, 1e-9)
                    window_start, window_tokens = now, 0
                    tflops = tps * self.flops_per_token / 1e12 / self.world_size
                    metrics.update(
                        tokens_per_s=tps,
                        tflops=tflops,
                        mfu=tflops / self.peak_tflops if self.peak_tflops else None,
                        memory_gb=peak_memory_gb(self.device),
                    )
                    log.log("train", self.step, metrics)
                    eta = (self.total_steps - self.step) * (
                        (time.monotonic() - started) / max(1, self.step - (resume_step or 0))
                    )
                    log.info(progress_line(self.step, self.total_steps, metrics, eta))
                last = metrics
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    self._log_validation(log)
                if cfg.eval_tasks_every and self.step % cfg.eval_tasks_every == 0:
                    self._log_zero_shot(log)
                stop = self._should_stop(started)
                if stop or (cfg.save_every and self.step % cfg.save_every == 0):
                    self.save()
                if stop:
                    log.info(f"stopping at step {self.step}: {stop}; resume with --resume")
                    break
            else:
                final = self.checkpoints.newest()
                # This step's folder is sound if this run wrote it or resumed from it (verified
                # at start); one left by an earlier run that failed its checksums is rewritten.
                complete = (
                    final is not None
                    and final == self.checkpoints.folder(self.step)
                    and final in (self._last_saved, self.resumed_from)
                )
                if finished_before and complete:
                    log.info(f"{self.run}: already trained to {self.tokens:,} tokens")
                else:
                    self._log_validation(log)
                    if cfg.eval_tasks_every and self.step % cfg.eval_tasks_every:
                        self._log_zero_shot(log)  # the end of the run, when not just done
                    if not complete:  # missing, or damaged and now recomputed: (re)write it
                        self.save()
        finally:
            for s, h in old_handlers.items():
                signal.signal(s, h)
            emissions = tracker.stop() if tracker is not None else None
            if emissions is not None:
                energy = tracker.final_emissions_data.energy_consumed
                log.info(
                    f"measured by codecarbon: {energy:.3g} kWh, {emissions:.3g} kg CO2eq "
                    f"({cfg.carbon_country}); {self.run / 'emissions.csv'}"
                )
            log.close()
        return {
            "step": self.step,
            "tokens": self.tokens,
            "skipped": self.skipped,
            "skip_reasons": self.skip_reasons,
            "stopped": stop,
            "last": last,
            "emissions_kg": emissions,
            "checkpoint": str(self.checkpoints.newest()),
        }

    def _check_can_learn(self, metrics: dict[str, Any]) -> None:
        """Stop (RunStopped, exit code 1) after train.max_consecutive_skips skipped steps in a
        row; no checkpoint is written, so the newest one stays the last good one."""
        limit = self.cfg.max_consecutive_skips
        if not limit or self.consecutive_skips < limit:
            return
        newest = self.checkpoints.newest()
        keep = f"; the newest checkpoint stays {newest}" if newest else "; nothing was saved"
        raise RunStopped(
            f"stopping at step {self.step}: {self.consecutive_skips} steps in a row were skipped "
            f"(last: {metrics.get('skip_reason')}), the run cannot learn with these settings "
            f"(train.max_consecutive_skips={limit}){keep}"
        )

    def _log_zero_shot(self, log: MetricsLog) -> None:
        from bloomforge.training.zero_shot import zero_shot

        results = zero_shot(self.model, self.tokenizer, self.device, self.recipe)
        log.log("zero_shot", self.step, results)
        log.info("zero-shot " + " | ".join(f"{k} {v:.4f}" for k, v in results.items()))

    def _log_validation(self, log: MetricsLog) -> None:
        results = self.validate()
        if not results:
            return
        flat = {f"{g}/{k}": v for g, r in results.items() for k, v in r.items() if k != "tokens"}
        log.log("valid", self.step, flat)
        log.info(
            "valid "
            + " | ".join(f"{g} loss {r['loss']:.4f} ppl {r['ppl']:.1f}" for g, r in results.items())
        )


def _check_supported(recipe: Recipe, device: torch.device) -> None:
    """Refuse, before any work, option combinations that would fail later in the run."""
    model, train = recipe.model, recipe.train
    if model.attn_impl == "flex" and device.type == "cpu":
        # PyTorch has no FlexAttention backward on CPU (eager or compiled).
        raise BloomforgeError(
            "model.attn_impl=flex: FlexAttention has no backward pass on CPU; "
            "train with model.attn_impl=sdpa (or reference) on CPU, flex on GPUs"
        )
    if model.attn_impl == "flex" and model.attention_dropout > 0:
        raise BloomforgeError(
            "model.attn_impl=flex does not support model.attention_dropout > 0; "
            "use model.attn_impl=sdpa"
        )
    if recipe.parallel.pp > 1 and recipe.data.mtf:
        raise BloomforgeError(
            "data.mtf (multitask finetuning) is not supported with parallel.pp > 1 "
            "(pipeline stages take only the inputs); use data and tensor parallelism"
        )
    if recipe.parallel.pp > 1 and (
        model.attention == "prefix_lm" or train.reweight_loss_based_on_position_frequency
    ):
        raise BloomforgeError(
            "model.attention=prefix_lm and train.reweight_loss_based_on_position_frequency "
            "are not supported with parallel.pp > 1 (pipeline stages take only the inputs)"
        )


def _carbon_tracker(run: Path, country: str):
    """codecarbon's offline tracker when it is installed (measured energy and CO2), else None."""
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        return None
    tracker = OfflineEmissionsTracker(
        country_iso_code=country, output_dir=str(run), log_level="error", save_to_file=True
    )
    tracker.start()
    return tracker
