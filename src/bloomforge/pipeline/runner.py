"""Run the stages of a recipe in order in one run folder, skipping what is already done.

In: a `Recipe`, the run folder, `--from/--until` stage names and `force`. Out: each selected
stage run or skipped, a record per stage in `OUT/.stages/<stage>.json` and the resolved recipe
in `OUT/recipe.yaml` (names from `layout.RunLayout`); returns the records.

A stage's fingerprint is the SHA-256 of its own recipe sections (`config.STAGE_SECTIONS`) and the
fingerprints of the stages it reads, so a changed key re-runs its stage and everything
downstream, nothing upstream. The data stage also hashes the size and mtime of every file its
section names. A stage is skipped when its record holds the current fingerprint and its outputs
exist. The record is written last, after the outputs (which the stages write atomically), so a
run killed mid-stage re-runs that stage; a `.started` marker with the same fingerprint lets
resumable stages (train: from its newest checkpoint; data: datatrove's finished tasks) continue
instead of starting over. Stages outside --from/--until are not run; their outputs must exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloomforge import files
from bloomforge.documents.inputs import spec_paths
from bloomforge.errors import BloomforgeError
from bloomforge.outputs import find_run_folder
from bloomforge.pipeline.config import STAGE_SECTIONS, STAGES, stage_name
from bloomforge.pipeline.layout import RunLayout
from bloomforge.recipe import Recipe
from bloomforge.typed_config import save_yaml, to_dict

log = logging.getLogger(__name__)

_MAX_STAT_FILES = 100_000


@dataclass
class Context:
    run: Path
    recipe: Recipe
    resume: bool = False  # a previous attempt at this stage with the same fingerprint was cut
    echo: Callable[[str], None] = log.info  # a stage's progress lines (bloomforge.log)

    @property
    def layout(self) -> RunLayout:
        """The names of the run folder's files."""
        return RunLayout(self.run)


@dataclass(frozen=True)
class Stopped:
    """What a stage returns when it saved its progress and stopped before the end (a training
    stage's kill switch, time limit or signal): the run stops there, the stage stays
    unfinished and the next `run` resumes it."""

    reason: str


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]  # upstream stages whose fingerprints feed this one's
    outputs: tuple[str, ...]  # paths (relative to the run folder) that a finished stage left
    fn: Callable[[Context], dict[str, Any] | Stopped]  # runs the stage; details for its record


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _strings(v)]
    return []


def path_stats(paths: list[str | Path], base: Path | None = None) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file at or below each existing path (capped); paths
    relative to `base` when given (a run folder copied elsewhere keeps its fingerprints)."""
    out: list[tuple[str, int, int]] = []
    for p in paths:
        path = Path(p)
        try:
            files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
        except OSError:
            continue
        for f in files:
            if f.is_file() and not f.name.startswith("."):
                st = f.stat()
                name = str(f.relative_to(base)) if base is not None else str(f)
                out.append((name, st.st_size, st.st_mtime_ns))
                if len(out) >= _MAX_STAT_FILES:
                    return out
    return out


def settings_of(recipe: Recipe, stage: str) -> dict[str, Any]:
    plain = to_dict(recipe)
    settings = {key: plain[key] for key in STAGE_SECTIONS[stage]}
    if stage == "data":  # raw input files named in the section: edited in place -> re-run
        settings["files"] = path_stats([s for s in _strings(plain["prepare"]) if os.path.exists(s)])
    return settings


def recipe_inputs(recipe: Recipe) -> list[str]:
    """The existing files and folders a recipe reads (a run folder may not be inside one)."""
    import sysconfig

    named: list[str] = _strings(to_dict(recipe.prepare))
    if recipe.corpus is not None:
        named += [recipe.corpus.locale_dir, recipe.corpus.code_dir or sysconfig.get_path("stdlib")]
    named += spec_paths(recipe.tokenizer.fertility)
    named += [*recipe.eval.perplexity.values(), *([recipe.eval.data] if recipe.eval.data else [])]
    return [s for s in named if s and os.path.exists(s)]


def enterable(run: Path, stages: list[Stage]) -> bool:
    """Whether `bloomforge run` may write into the non-empty folder `run`: one it made (it has
    .stages/), or one holding only stage outputs made by hand; else a one-line error."""
    layout = RunLayout(run)
    if layout.records.is_dir():
        return True
    ours = {o.split("/")[0] for s in stages for o in s.outputs}
    for entry in sorted(run.iterdir()):
        if entry == layout.recipe:
            raise BloomforgeError(
                f"{entry}: was not written by `bloomforge run` (no {layout.records.name}/ "
                "beside it); choose a new folder for --out"
            )
        if entry.name not in ours and not entry.name.startswith("."):
            raise BloomforgeError(
                f"{run}: is not a bloomforge run folder (holds '{entry.name}'); "
                "choose a new or empty folder for --out"
            )
    return True


def read_record(run: Path, stage: str) -> dict[str, Any] | None:
    try:
        return json.loads(RunLayout(run).record(stage).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_json(path, obj, default=str)


def _peak_rss_mb() -> dict[str, float]:
    """Peak resident memory so far (Linux reports KiB) of this process and of its children, and
    this process's peak since `_reset_stage_peak` (None where /proc does not tell)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stage = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                stage = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return {
        "max_rss_mb": round(own, 1),
        "children_max_rss_mb": round(kids, 1),
        "stage_peak_rss_mb": stage,
    }


def _reset_stage_peak() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # files: a kernel control file


def select(stages: list[Stage], first: str | None, last: str | None) -> list[str]:
    """Names of the stages from `first` to `last` (inclusive) among `stages`."""
    names = [s.name for s in stages]
    try:
        lo = STAGES.index(stage_name(first)) if first else 0
        hi = STAGES.index(stage_name(last)) if last else len(STAGES) - 1
    except ValueError as e:
        raise BloomforgeError(f"--from/--until: {e}") from None
    if lo > hi:
        raise BloomforgeError(f"--from {first} comes after --until {last}")
    return [n for n in names if lo <= STAGES.index(n) <= hi]


def run_stages(
    ctx: Context,
    stages: list[Stage],
    first: str | None = None,
    last: str | None = None,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run or skip each stage; returns {stage: record} for the selected stages."""
    run, chosen = ctx.run, select(stages, first, last)
    layout = RunLayout(run)
    layout.records.mkdir(parents=True, exist_ok=True)  # first: marks recipe.yaml as ours
    save_yaml(ctx.recipe, layout.recipe)
    fingerprints: dict[str, str] = {}
    done: dict[str, dict[str, Any]] = {}
    if not chosen:
        raise BloomforgeError(
            f"--from/--until select no stage of this recipe ({', '.join(s.name for s in stages)})"
        )
    last_chosen = max(STAGES.index(n) for n in chosen)
    for stage in stages:
        if STAGES.index(stage.name) > last_chosen:
            break
        inputs = {}
        for up in stage.needs:
            if up not in fingerprints and stage.name in chosen:
                raise BloomforgeError(
                    f"{run}: stage '{stage.name}' needs the outputs of '{up}', which are "
                    f"missing; run '{up}' first (or leave out --from)"
                )
            inputs[up] = fingerprints.get(up, "")
        settings = settings_of(ctx.recipe, stage.name)
        fp = _hash({"stage": stage.name, "settings": settings, "inputs": inputs})
        record = read_record(run, stage.name)
        complete = all((run / o).exists() for o in stage.outputs)
        if stage.name not in chosen:
            if record is not None and complete:
                fingerprints[stage.name] = record["fingerprint"]
            elif complete:  # outputs made elsewhere (e.g. `data prepare` run by hand)
                stat = path_stats([run / o for o in stage.outputs], base=run)
                fingerprints[stage.name] = _hash({"outputs": stat})
            continue
        if not force and complete and record is not None and record["fingerprint"] == fp:
            ctx.echo(f"[{stage.name}] up to date, skipped")
            fingerprints[stage.name] = fp
            done[stage.name] = {**record, "skipped": True}
            continue
        started_file = layout.started(stage.name)
        try:
            previous = json.loads(started_file.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            previous = None
        made_here = record is not None or started_file.exists()
        found = [o for o in stage.outputs if (run / o).exists()]
        runs = [o for o in found if find_run_folder(run / o.split("/")[0])]
        if runs and not made_here:  # not even with --force: checkpoints are never cleared
            raise BloomforgeError(
                f"{run / runs[0].split('/')[0]} holds a training run that this run's "
                f"{stage.name} stage did not write; --force never replaces checkpoints: "
                "move it away or start after it (--from)"
            )
        if found and not made_here and not force:  # never replace what a user put there
            raise BloomforgeError(
                f"{run / found[0]} exists but was not written by this run's {stage.name} stage; "
                f"start after it (--from) or pass --force to replace it"
            )
        layout.record(stage.name).unlink(missing_ok=True)
        _write_json(started_file, {"fingerprint": fp, "time": time.time()})
        why = "resuming" if previous == fp else "running"
        ctx.echo(f"[{stage.name}] {why}")
        stage_ctx = Context(run, ctx.recipe, resume=previous == fp and not force, echo=ctx.echo)
        _reset_stage_peak()
        t0 = time.perf_counter()
        details = stage.fn(stage_ctx)
        if isinstance(details, Stopped):
            ctx.echo(f"[{stage.name}] stopped: {details.reason}; run again to resume it")
            done[stage.name] = {"stage": stage.name, "skipped": False, "stopped": details.reason}
            return done
        record = {
            "stage": stage.name,
            "fingerprint": fp,
            "inputs": inputs,
            "settings": settings if stage.name != "data" else to_dict(ctx.recipe.prepare),
            "seconds": round(time.perf_counter() - t0, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **_peak_rss_mb(),
            "details": details,
        }
        _write_json(layout.record(stage.name), record)  # last: the stage is now complete
        started_file.unlink(missing_ok=True)
        peak = record["stage_peak_rss_mb"]
        memory = f", peak {peak:.0f} MB" if peak is not None else ""
        ctx.echo(f"[{stage.name}] done in {record['seconds']:.1f} s{memory}")
        fingerprints[stage.name] = fp
        done[stage.name] = {**record, "skipped": False}
    return done


def clear(path: Path) -> None:
    """Remove a stage's previous output before it starts over."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
