"""`data prepare`: the datatrove jobs per source (a `Job`: one executor's pipeline of steps),
run with the local, Slurm or Ray executor.

In: a `PrepareConfig` and the output folder OUT. Out, per source (sources stay separate, as in
ROOTS): stage `filter/SOURCE` (one task per input file: reader -> language id -> PII redaction
(originals -> `OUT/restricted/pii/SOURCE/`) -> ROOTS filters -> `OUT/work/filtered/SOURCE/`,
removed documents -> `OUT/excluded/STEP/SOURCE/`, malformed records -> `OUT/malformed/SOURCE/`),
the dedup stages `dedup/SOURCE/NAME` (`bloomforge.data.dedup`, into `OUT/work/deduped/SOURCE/`),
and stage `final/SOURCE` (-> `OUT/documents/SOURCE/LANGUAGE/RANK.jsonl.gz`). Every stage logs under
`OUT/logs/STAGE/`, so `read_ledger(OUT/logs)` sees all of them and datatrove's completion markers
there let a rerun skip finished tasks. `OUT/config.yaml` (the resolved config) is written first,
`OUT/stats.json` last (temp file + rename; it is removed when a run starts, so its presence
means the run finished). OUT must be a folder (or not exist yet): a file there is a one-line
error and is left as it was. On the console, one line per stage (`bloomforge.data.prepare.logs`);
datatrove's logs stay in OUT/logs.

PII is redacted right after reading (BigScience redacted the final corpus; redacting first means
excluded and intermediate documents are redacted too). Only OUT/restricted and OUT/malformed
(records that could not be parsed, kept as they were) hold unredacted text.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers import JsonlWriter

from bloomforge.data import dedup, filters
from bloomforge.data.ledger import IN, KEPT, record
from bloomforge.data.pii import PIIRedactor
from bloomforge.data.prepare.config import PrepareConfig, SourceConfig, source_files
from bloomforge.data.prepare.logs import FileLoggedExecutor, StageProgress, datatrove_quiet
from bloomforge.data.prepare.reader import FolderReader, SourceReader
from bloomforge.data.prepare.stats import write_stats
from bloomforge.errors import BloomforgeError
from bloomforge.typed_config import from_dict, to_dict

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm", "ray")
OUTPUT_STEP = "output"


@dataclass
class Job:
    name: str  # "filter/web", "dedup/web/minhash_1", "final/web": also its logging folder
    group: str  # filter | dedup | final
    source: str
    pipeline: list
    tasks: int
    files: list[str] | None = None  # the input files (filter stages: one task per file)

    def meta(self) -> dict[str, Any]:
        meta = {"name": self.name, "group": self.group, "source": self.source, "tasks": self.tasks}
        return meta if self.files is None else meta | {"files": self.files}


class Tally(PipelineStep):
    """Counts what reaches the end of the pipeline (ledger step "output": the final corpus)."""

    name = "bloomforge output tally"
    type = "📊 - STATS"
    ledger_name = OUTPUT_STEP

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1):
        for doc in data:
            record(self, doc, IN)
            record(self, doc, KEPT)
            yield doc


class StatsWriter(PipelineStep):
    """The last stage on Slurm: writes OUT/stats.json once every other stage has finished."""

    name = "bloomforge stats.json"
    type = "📊 - STATS"

    def __init__(self, out: str, config: dict, stages: list[dict], settings: dict) -> None:
        super().__init__()
        self.out, self.config, self.stages, self.settings = out, config, stages, settings

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1):
        write_stats(Path(self.out), self.config, self.stages, self.settings)
        if data:
            yield from data


def filter_config(config: PrepareConfig, source: SourceConfig) -> Any:
    """The typed FilterConfig of a source (its overrides merged over the `filters:` section)."""
    return from_dict(filters.FilterConfig, config.source_filters(source), "filters")


def dedup_config(config: PrepareConfig, source: SourceConfig) -> Any:
    return from_dict(dedup.DedupConfig, config.source_dedup(source), "dedup")


def _exclusion_writer(step: Any, out: Path, source: str) -> None:
    if hasattr(step, "exclusion_writer") and step.exclusion_writer is None:
        name = getattr(step, "ledger_name", type(step).__name__)
        folder = out / "excluded" / name / source
        step.exclusion_writer = JsonlWriter(str(folder), output_filename="${rank}.jsonl")


CORPUS = "_corpus"  # the dedup stages' name when all sources are deduplicated together


def build_jobs(config: PrepareConfig, out: Path) -> list[Job]:
    """Every stage of the run, in the order they must run."""
    out = Path(out).resolve()
    filter_jobs, dedup_jobs, final_jobs = [], [], []
    for src in config.sources:
        files = [str(p.resolve()) for p in source_files(src)]
        reader = SourceReader(
            src.name,
            files,
            malformed_dir=str(out / "malformed"),
            language=src.language,
            fmt=src.reader_format,
            text_key=src.text_key,
            id_key=src.id_key,
            url_key=src.url_key,
            max_doc_bytes=config.max_doc_bytes,
        )
        steps: list = [reader]
        quality: list = []
        if src.filters_on:
            fcfg = filter_config(config, src)
            steps.append(filters.language_id_step(fcfg, src.language))
            quality = filters.filter_steps(fcfg)
        if src.pii:
            # Before the filters, so nothing written after this point (work/, excluded/,
            # documents/) holds the originals: they exist only in restricted/pii/.
            steps.append(
                PIIRedactor(
                    str(out / "restricted" / "pii"),
                    src.name,
                    config.pii.types,
                    config.pii.public_ips_only,
                )
            )
        for step in quality:
            _exclusion_writer(step, out, src.name)
        if quality:
            steps.append(filters.EachFilterAlone(quality))
        steps += quality
        filtered = out / "work" / "filtered" / src.name
        steps.append(JsonlWriter(str(filtered)))
        stage = Job(f"filter/{src.name}", "filter", src.name, steps, len(files), files)
        filter_jobs.append(stage)

        final_input = filtered
        if src.dedup_on and config.dedup_scope == "corpus":
            final_input = out / "work" / "deduped" / src.name  # written by the corpus stages
        elif src.dedup_on:
            final_input = out / "work" / "deduped" / src.name
            for s in dedup.dedup_jobs(
                str(filtered),
                str(final_input),
                str(out / "work" / "dedup" / src.name),
                dedup_config(config, src),
                len(files),
            ):
                name = f"dedup/{src.name}/{s.name}"
                dedup_jobs.append(Job(name, "dedup", src.name, list(s.pipeline), s.tasks))
        final: list = [FolderReader(str(final_input))]
        final.append(Tally())
        final.append(
            JsonlWriter(
                str(out / "documents" / src.name),
                output_filename="${language}/${rank}.jsonl.gz",
            )
        )
        final_jobs.append(Job(f"final/{src.name}", "final", src.name, final, len(files)))
    if config.dedup_scope == "corpus":
        # One set of dedup stages over every source's filtered files (sorted by source name,
        # then file: the first copy in that order is kept); outputs mirror work/filtered/SOURCE.
        for s in dedup.dedup_jobs(
            str(out / "work" / "filtered"),
            str(out / "work" / "deduped"),
            str(out / "work" / "dedup" / CORPUS),
            dedup_config(config, config.sources[0]),
            sum(st.tasks for st in filter_jobs),
        ):
            dedup_jobs.append(Job(f"dedup/{CORPUS}/{s.name}", "dedup", CORPUS, s.pipeline, s.tasks))
    return filter_jobs + dedup_jobs + final_jobs


def _make_executor(
    kind: str, stage: Job, out: Path, workers: int, config: PrepareConfig, depends: Any
) -> Any:
    logging_dir = str(out / "logs" / stage.name)
    if kind == "local":
        return FileLoggedExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            workers=max(1, min(workers, stage.tasks)),
            logging_dir=logging_dir,
        )
    if kind == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        s = config.slurm
        if not s.partition:
            raise BloomforgeError("--executor slurm: set slurm.partition in the config")
        return SlurmPipelineExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            time=s.time,
            partition=s.partition,
            cpus_per_task=s.cpus_per_task,
            mem_per_cpu_gb=s.mem_per_cpu_gb,
            qos=s.qos,
            workers=s.workers,
            job_name=f"{s.job_name}-{stage.name.replace('/', '-')}",
            env_command=s.env_command,
            condaenv=s.condaenv,
            venv_path=_job_venv(s.venv_path, s.env_command, s.condaenv),
            sbatch_args=dict(s.sbatch_args),
            max_array_size=s.max_array_size,
            depends=depends,
            logging_dir=logging_dir,
            slurm_logs_folder=str(out / "logs" / "slurm" / stage.name),
        )
    if kind == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(
            stage.pipeline,
            tasks=stage.tasks,
            workers=workers,
            depends=depends,
            logging_dir=logging_dir,
            cpus_per_task=config.ray.cpus_per_task,
            mem_per_cpu_gb=config.ray.mem_per_cpu_gb,
        )
    raise BloomforgeError(f"--executor {kind}: expected one of {', '.join(EXECUTORS)}")


def _job_venv(venv_path: str | None, env_command: str | None, condaenv: str | None) -> str | None:
    """The activate script each Slurm job sources: the config's `slurm.venv_path`, else the
    virtual environment running bloomforge now (jobs need datatrove's `launch_pickled_pipeline`
    and bloomforge on their PATH even when sbatch is called from a shell without the venv)."""
    if venv_path or env_command or condaenv:
        return venv_path
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix != sys.base_prefix and activate.is_file():
        return str(activate)
    return None


def build_executors(
    config: PrepareConfig, out: Path, workers: int = 1, executor: str = "local"
) -> tuple[list[Job], list[Any]]:
    """The stages and one datatrove executor per stage (Slurm/Ray: chained with `depends`).

    On Slurm a last one-task stage `stats` writes OUT/stats.json after the others.
    """
    if executor not in EXECUTORS:
        raise BloomforgeError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise BloomforgeError(
            "--executor ray needs the 'ray' package (pip install 'bloomforge[cluster]')"
        )
    if workers < 1:
        raise BloomforgeError(f"--workers {workers}: must be at least 1")
    out = Path(out).resolve()
    stages = build_jobs(config, out)
    if executor == "slurm":
        settings = {"executor": executor, "workers": workers}
        metas = [s.meta() for s in stages]
        writer = StatsWriter(str(out), to_dict(config), metas, settings)
        stages.append(Job("stats", "stats", "", [writer], 1))
    executors: list[Any] = []
    for stage in stages:
        # Slurm: each job array waits for the previous one (afterok). Ray: stages run one after
        # the other from here (`_run_on_ray`), so no `depends`: datatrove's Ray executor would
        # wait forever for a dependency whose task failed.
        depends = executors[-1] if executors and executor == "slurm" else None
        executors.append(_make_executor(executor, stage, out, workers, config, depends))
    s = config.slurm
    venv = _job_venv(s.venv_path, s.env_command, s.condaenv) if executor == "slurm" else None
    if venv and not s.venv_path:  # chosen here, not by the user: say so once, not per job array
        log.info("Slurm jobs will activate %s (set slurm.venv_path to change)", venv)
    return stages, executors


def prepare(
    config: PrepareConfig, out: str | Path, workers: int = 1, executor: str = "local"
) -> dict:
    """Run (local, Ray) or submit (Slurm) every stage; returns stats.json's content.

    A rerun on the same OUT with the same config skips the tasks that finished; a different
    config on an existing OUT is an error (the outputs would mix).
    """
    from bloomforge.data.prepare.config import check_saved_config

    _check_out_folder(Path(out))
    out = Path(out).resolve()
    check_saved_config(config, out)
    if executor == "slurm":  # datatrove's messages say where the jobs are
        return _run(config, out, workers, executor)
    with datatrove_quiet(out / "logs" / "prepare.log"):  # its warnings while building too
        return _run(config, out, workers, executor)


def _run(config: PrepareConfig, out: Path, workers: int, executor: str) -> dict:
    stages, executors = build_executors(config, out, workers, executor)
    (out / "stats.json").unlink(missing_ok=True)
    for stage in stages:  # readers of intermediate folders need them to exist
        if stage.group != "stats":
            (out / "logs" / stage.name).mkdir(parents=True, exist_ok=True)
    for src in config.sources:
        (out / "work" / "filtered" / src.name).mkdir(parents=True, exist_ok=True)
        (out / "work" / "deduped" / src.name).mkdir(parents=True, exist_ok=True)
    settings = {"executor": executor, "workers": workers, "started": time.time()}
    if executor == "slurm":
        executors[-1].run()  # launches the chain of job arrays
        return {"submitted": [s.name for s in stages], "out": str(out)}
    if executor == "ray":
        _run_on_ray(stages, executors)
    else:
        progress = StageProgress(len(stages))
        for stage, ex in zip(stages, executors, strict=True):
            with progress.stage(stage.name, stage.tasks, len(ex.get_incomplete_ranks())):
                ex.run()
    settings["finished"] = time.time()
    return write_stats(out, to_dict(config), [s.meta() for s in stages], settings)


def _ray_address() -> str:
    """The cluster at RAY_ADDRESS (checked to answer: Ray would retry a dead one for ever), else
    "local": a Ray started for this run alone. Not Ray's own default, which also tries the last
    cluster `ray start` began on this machine, even when it is gone."""
    address = os.environ.get("RAY_ADDRESS", "")
    if not address:
        return "local"
    if address == "auto" or "://" in address:  # Ray's discovery, Ray Client: as Ray does them
        return address
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise BloomforgeError(
            f"RAY_ADDRESS={address}: no Ray cluster answers there ({e}); start one "
            "(ray start --head) or unset RAY_ADDRESS to run on a Ray started for this run"
        ) from e
    return address


def _run_on_ray(stages: list[Job], executors: list[Any]) -> None:
    """Each stage on the Ray cluster in turn; a stage with failed tasks stops the run.

    Connects to the cluster at RAY_ADDRESS, else starts a local Ray for this run (and shuts it
    down at the end); a Ray already initialised in this process is used as it is.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        address = _ray_address()
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as e:  # it answers, but not as a Ray cluster this driver may use
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BloomforgeError(
                f"RAY_ADDRESS={address}: {first} (a cluster with token authentication needs "
                "RAY_AUTH_MODE=token and its token here)"
            ) from e
    try:
        cpus = ray.cluster_resources().get("CPU", 0)
        log.info("Ray cluster: %d nodes, %g CPUs", len(ray.nodes()), cpus)
        progress = StageProgress(len(stages))
        for stage, ex in zip(stages, executors, strict=True):
            with progress.stage(stage.name, stage.tasks, len(ex.get_incomplete_ranks())):
                ex.run()
                failed = ex.get_incomplete_ranks()
                if failed:
                    raise BloomforgeError(
                        f"--executor ray: stage {stage.name}: {len(failed)} of {stage.tasks} "
                        f"tasks failed (ranks {failed[:10]}); see {ex.logging_dir.path}/logs/"
                    )
    finally:
        if started:
            ray.shutdown()


def _check_out_folder(out: Path) -> None:
    """OUT, or the first of its parents that exists, must be a folder (before writing any)."""
    if out.is_symlink() and not out.exists():
        raise BloomforgeError(f"{out}: is a link to nothing; --out must be a folder")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        if existing == out:
            raise BloomforgeError(f"{out}: is a file; --out must be a folder (new or earlier)")
        raise BloomforgeError(f"{out}: {existing} is a file, so this folder cannot be made")
