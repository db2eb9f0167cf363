"""Architecture ablations: a grid of recipe variants trained on one fixed token budget.

In: a grid YAML (`base`: a recipe path or an inline recipe mapping; `overrides`: `key=value`
shared by all variants; `vary`: `{dotted.key: [values]}`, crossed as a cartesian product;
`eval`: what to measure). Out: one run folder per variant under `OUT/runs/<name>/` (trained with
the ordinary `Trainer`, resumable) and per variant a result dict: validation loss per group and
mean, throughput, zero-shot task scores, and validation loss at k x the training length
(extrapolation). `bloomforge.science.ablate_report` turns the results into tables and plots.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.evaluation.config import EvalConfig
from bloomforge.recipe import Recipe
from bloomforge.training.metrics import read_metrics as read_training_metrics
from bloomforge.typed_config import (
    ConfigError,
    apply_overrides,
    apply_settings,
    bounded,
    from_dict,
    load_yaml,
)

TRAIN_DONE = "ablate-train.json"  # written in a run folder once its training has finished
EVAL_DONE = "ablate-eval.json"  # the variant's measurements, with the eval settings used


@dataclass
class EvalSpec:
    extrapolation: list[int] = field(default_factory=lambda: [1, 2, 4])
    samples: int = bounded(64, ge=1)  # held-out windows per group at 1x; k x: samples // k
    batch_size: int = bounded(4, ge=1)
    tasks: list[str] = field(default_factory=list)
    data: str | None = None  # folder of task data (xcopa/, copa/, ...) for `tasks`
    limit: int | None = bounded(100, ge=1)  # examples per task subset

    def __post_init__(self) -> None:
        if any(k < 1 for k in self.extrapolation):
            raise ValueError("key 'extrapolation': factors must be >= 1")
        if self.tasks and self.data is None:
            raise ValueError("key 'tasks': needs eval.data (the task folder)")

    def eval_config(self) -> EvalConfig:
        """The zero-shot part as the recipe's eval section (`evaluation.run.evaluate`)."""
        return EvalConfig(self.tasks, self.data, self.limit, self.batch_size)


@dataclass
class GridConfig:
    """A grid file: `base` (a recipe path, or a recipe mapping) with `overrides` (key=value, as
    on `bloomforge train`'s command line) for every variant, `vary` crossed as a cartesian
    product, and `eval`."""

    base: str | dict[str, Any]
    vary: dict[str, list[Any]]
    overrides: list[str] = field(default_factory=list)
    eval: EvalSpec = field(default_factory=EvalSpec)

    def __post_init__(self) -> None:
        if not self.vary:
            raise ValueError("key 'vary': a mapping of dotted keys to value lists")
        for key, values in self.vary.items():
            if not values:
                raise ValueError(f"key 'vary.{key}': a non-empty list of values")


@dataclass
class Variant:
    name: str
    settings: dict[str, Any]  # the varied key -> its value in this variant
    recipe: Recipe

    @property
    def run(self) -> Path:
        return Path(self.recipe.out)


@dataclass
class Grid:
    path: Path
    variants: list[Variant]
    eval: EvalSpec
    vary: dict[str, list[Any]]


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def variant_name(settings: dict[str, Any]) -> str:
    """`{"model.position": "alibi"}` -> `position=alibi` (last key part; full key if ambiguous)."""
    lasts = [k.rsplit(".", 1)[-1] for k in settings]
    parts = []
    for key, last in zip(settings, lasts, strict=True):
        label = last if lasts.count(last) == 1 else key
        parts.append(f"{label}={_value_text(settings[key])}")
    return ",".join(parts).replace("/", "_").replace(" ", "_")


def _base_data(base: str | dict[str, Any], grid_path: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return base
    candidates = [Path(base), grid_path.parent / base]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise BloomforgeError(f"{grid_path}: key 'base': no such recipe file {base}")
    return load_yaml(found)


def load_grid(path: str | os.PathLike, out: str | os.PathLike) -> Grid:
    """Read and expand a grid; every variant's recipe is validated before anything trains."""
    path = Path(path)
    try:
        grid = from_dict(GridConfig, load_yaml(path))
        shared = apply_overrides(_base_data(grid.base, path), grid.overrides)
    except ConfigError as e:
        raise BloomforgeError(e if str(e).startswith(str(path)) else f"{path}: {e}") from e
    variants, names = [], set()
    for combo in itertools.product(*grid.vary.values()):
        settings = dict(zip(grid.vary, combo, strict=True))
        name = variant_name(settings)
        if name in names:
            raise BloomforgeError(f"{path}: two variants are both named {name}")
        names.add(name)
        run = str(Path(out) / "runs" / name)
        try:
            recipe = from_dict(Recipe, apply_settings(shared, {**settings, "out": run}))
        except ConfigError as e:
            raise BloomforgeError(f"{path}: variant {name}: {e}") from e
        if not recipe.data.tokens:
            raise BloomforgeError(f"{path}: data.tokens is not set (base or overrides)")
        variants.append(Variant(name, settings, recipe))
    return Grid(path, variants, grid.eval, grid.vary)


# -- training -----------------------------------------------------------------------------------
def _write_json(path: Path, obj: Any) -> None:
    files.write_json(path, obj, indent=2, ensure_ascii=True)


def train_variant(variant: Variant) -> dict[str, Any]:
    """Train one variant (resume an interrupted run; a finished one is read back, not rerun)."""
    from bloomforge.training.train import train

    done = variant.run / TRAIN_DONE
    if done.is_file():
        return {**json.loads(done.read_text()), "reused": True}
    result = train(variant.recipe)
    if result.stopped:
        raise BloomforgeError(
            f"variant {variant.name} stopped ({result.stopped}); rerun with --resume"
        )
    record = {k: result.summary[k] for k in ("step", "tokens", "skipped", "checkpoint")}
    _write_json(done, record)
    return {**record, "reused": False}


def read_metrics(run: Path) -> dict[str, Any]:
    """Training curve and throughput from RUN/metrics.jsonl (docs/training.md)."""
    train = [r for r in read_training_metrics(run) if r["kind"] == "train"]
    # The first logged step includes warm-up costs (allocations, kernel selection): left out
    # of the median whenever there is more than one step.
    tps = [r["tokens_per_s"] for r in train[1:] or train if r.get("tokens_per_s")]
    return {
        "curve": [(r["tokens"], r["loss"]) for r in train],
        "final_train_loss": train[-1]["loss"] if train else None,
        "tokens_per_s": statistics.median(tps) if tps else None,
    }


# -- evaluation ---------------------------------------------------------------------------------
def extrapolation_losses(
    model: Any, recipe: Recipe, factors: list[int], samples: int, batch_size: int, device: Any
) -> dict[int, dict[str, Any]]:
    """Held-out loss per group at k x data.seq_len for each k, from a MixtureLoader built at that
    length, computed as training's validation computes it (`training.objective.heldout_loss`).
    `None` (n/a) where learned positions end before the length or text runs out. At k,
    samples // k windows are read, so every length covers about the same held-out tokens."""
    import torch

    from bloomforge.data.loader import MixtureLoader
    from bloomforge.training.objective import heldout_loss, objective_of

    cfg, seq = recipe.model, recipe.data.seq_len
    objective = objective_of(recipe)  # as the run's own validation asks the model
    out: dict[int, dict[str, Any]] = {}
    model.eval()
    for k in factors:
        length = k * seq
        entry: dict[str, Any] = {"length": length, "groups": {}, "mean": None, "note": ""}
        out[k] = entry
        if cfg.position == "learned" and length > cfg.max_seq_len:
            entry["note"] = f"learned positions end at {cfg.max_seq_len}"
            continue
        try:
            loader = MixtureLoader(
                recipe.data.tokens,
                length,
                seed=recipe.seed,
                group_by=recipe.data.group_by,
                weights=recipe.data.weights,
                alpha=recipe.data.alpha,
                valid_fraction=recipe.data.valid_fraction,
            )
        except BloomforgeError as e:
            entry["note"] = str(e)
            continue
        bf16 = recipe.train.precision == "bf16" and torch.device(device).type == "cuda"
        for group in loader.groups:
            batches = loader.validation_batches(group, batch_size, max(1, samples // k))
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                total, count = heldout_loss(model, objective, batches, device)
            entry["groups"][group] = total / count if count else None
        values = list(entry["groups"].values())
        if values and all(v is not None for v in values):
            entry["mean"] = sum(values) / len(values)
        else:
            entry["note"] = f"held-out text shorter than {length + 1} tokens in some group"
    return out


def evaluate_variant(variant: Variant, spec: EvalSpec) -> dict[str, Any]:
    """Measure a trained variant (cached in the run folder for the same eval settings)."""
    from dataclasses import asdict

    cache = variant.run / EVAL_DONE
    settings = asdict(spec)
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("eval") == settings:
            return cached["results"]
    import torch

    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.devices import resolve_device

    device = torch.device(resolve_device(variant.recipe.train.device, "train.device"))
    ckpt = load_checkpoint(variant.run, device=device)
    recipe = ckpt.recipe  # the resolved recipe the run trained (vocabulary from the tokenizer)
    factors = sorted(set([1, *spec.extrapolation]))
    ext = extrapolation_losses(ckpt.model, recipe, factors, spec.samples, spec.batch_size, device)
    from bloomforge.model.flops import count_params

    results: dict[str, Any] = {
        "checkpoint": str(ckpt.path),
        "params": count_params(recipe.model).total,
        "seq_len": recipe.data.seq_len,
        "valid": {"groups": ext[1]["groups"], "mean": ext[1]["mean"]},
        "extrapolation": {str(k): ext[k] for k in spec.extrapolation},
        **read_metrics(variant.run),
    }
    if spec.tasks:
        from bloomforge.evaluation.run import evaluate
        from bloomforge.evaluation.scoring import Scorer
        from bloomforge.evaluation.tasks import get_task

        scorer = Scorer(ckpt.model, ckpt.tokenizer(), device, spec.batch_size)
        scored = evaluate(scorer, spec.eval_config())["tasks"]
        results["tasks"] = {}
        for name in spec.tasks:
            metric = get_task(name).metrics[0]
            results["tasks"][name] = {"metric": metric, "value": scored[name]["all"][metric]}
    del ckpt
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    _write_json(cache, {"eval": settings, "results": results})
    return results


def run_variant(variant: Variant, spec: EvalSpec, threads: int | None = None) -> dict[str, Any]:
    """Train then evaluate one variant; the unit of work of a worker process."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    train = train_variant(variant)
    return {
        "name": variant.name,
        "settings": variant.settings,
        "run": str(variant.run),
        "train": train,
        **evaluate_variant(variant, spec),
    }


def run_grid(grid: Grid, workers: int = 1) -> list[dict[str, Any]]:
    """All variants, one after another or in `workers` spawned processes; results in grid order."""
    if workers <= 1 or len(grid.variants) == 1:
        return [run_variant(v, grid.eval) for v in grid.variants]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned (not forked) workers: a forked torch process can deadlock in its thread pools.
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(run_variant, v, grid.eval, threads) for v in grid.variants]
        return [f.result() for f in futures]


def is_number(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def check_out(grid: Grid, resume: bool) -> None:
    """Refuse to mix into existing runs unless resuming (as `bloomforge train` does)."""
    if resume:
        return
    existing = [v.name for v in grid.variants if v.run.exists() and any(v.run.iterdir())]
    if existing:
        raise BloomforgeError(
            f"{grid.variants[0].run.parent} already has run(s) {', '.join(existing)}; "
            "pass --resume (finished variants are skipped) or choose another --out"
        )
