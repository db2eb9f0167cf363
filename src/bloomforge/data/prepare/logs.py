"""What `data prepare` shows while it runs: one line per stage; datatrove's logs go to files.

In: the local executors of the stages. Out: datatrove's messages (pipeline, "Processing done",
each task's stats block and the stage's summed one, all printed to stderr by datatrove, so a
small run printed hundreds of lines) written only to the task log files,
`OUT/logs/STAGE/logs/task_NNNNN.log`, beside the stats datatrove saves
(`OUT/logs/STAGE/stats/NNNNN.json`, `OUT/logs/STAGE/stats.json`), and what the run itself logs
(warnings, the executors' progress) in `OUT/logs/prepare.log`; on the console, one line per
stage (`StageProgress`). datatrove logs through loguru and sets its sinks in `add_task_logger`
(stderr at INFO, the task file at DEBUG) at the start of every task; `FileLoggedExecutor` runs
the tasks with a version of it that keeps only the file. Slurm and Ray tasks log on their
nodes, into the same files and their own logs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from datatrove.executor import LocalPipelineExecutor
from loguru import logger

# datatrove's format (datatrove.utils.logging.add_task_logger), uncoloured
_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"


def _add_task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's `add_task_logger` without its console sink."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")  # files: a log stream
    prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
    logger.add(logfile, colorize=False, level="DEBUG", format=prefix + _FORMAT)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def _close_task_logger(logfile: Any) -> None:
    """datatrove's `close_task_logger`, which puts its console sink back: here `prepare.log`."""
    logger.complete()
    logger.remove()
    logfile.close()
    _add_run_log()


class FileLoggedExecutor(LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor, its tasks logging to their log files only.

    A task runs in this process (`workers=1`) or in a pool process, so the swap is made around
    each task, where it runs.
    """

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        import datatrove.executor.base as base

        saved = base.add_task_logger, base.close_task_logger
        base.add_task_logger, base.close_task_logger = _add_task_logger, _close_task_logger
        try:
            return super()._run_for_rank(rank, local_rank, node_rank)
        finally:
            base.add_task_logger, base.close_task_logger = saved


_RUN_LOG: Path | None = None  # where this process's datatrove messages go between tasks


def _add_run_log() -> None:
    if _RUN_LOG is not None:
        logger.add(_RUN_LOG, colorize=False, level="INFO", format=_FORMAT)


@contextlib.contextmanager
def datatrove_quiet(run_log: Path) -> Iterator[None]:
    """datatrove's messages in this process (warnings, the executors' progress and summed
    stats, which datatrove also saves as `logs/STAGE/stats.json`) go to `run_log`, not the
    console; datatrove's default console sink is back afterwards."""
    global _RUN_LOG
    run_log.parent.mkdir(parents=True, exist_ok=True)
    logger.remove()
    _RUN_LOG = run_log
    _add_run_log()
    try:
        yield
    finally:
        from datatrove.utils.logging import setup_default_logger

        _RUN_LOG = None
        setup_default_logger()


class StageProgress:
    """`[2/5] dedup/web/minhash_1: 4 tasks done in 3.1 s`, one line per stage on `stream`.

    On a terminal the line is shown while the stage runs and completed in place.
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.index = 0

    @contextlib.contextmanager
    def stage(self, name: str, tasks: int, todo: int) -> Iterator[None]:
        self.index += 1
        head = f"[{self.index}/{self.total}] {name}: "
        done_before = tasks - todo
        if todo == 0:
            self._line(head + f"{_tasks(tasks)} done before, skipped")
            yield
            return
        if self.live:
            self.stream.write(head + f"{_tasks(todo)} running...")
            self.stream.flush()
        start = time.monotonic()
        try:
            yield
        except BaseException:
            if self.live:
                self.stream.write("\n")
            raise
        seconds = time.monotonic() - start
        before = f" ({done_before} done before)" if done_before else ""
        self._line(head + f"{_tasks(todo)} done in {seconds:.1f} s{before}")

    def _line(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.live else "") + text + "\n")
        self.stream.flush()


def _tasks(n: int) -> str:
    return f"{n} task" + ("" if n == 1 else "s")
