"""The console: one format for what every bloomforge command logs.

In: records of the `bloomforge` logger and its children (library code logs through
`logging.getLogger(__name__)`, never `print`). Out: one line per record, the message as written,
progress (INFO) on stdout and problems (WARNING and above) on stderr, `bloomforge: warning: ...`
as the CLI's one-line errors read; under torchrun a problem names its rank (`[rank 3] `). What a
command prints as its result (tables, JSON, paths) is not logging and stays `print` in
`*/commands.py`.

`configure()` is called once by the CLI (`bloomforge.cli.main`), and by a training run when
nothing set up the console (its progress lines are its output); a program that set up the
`bloomforge` logger itself keeps its own handlers. The stream is looked up at each record, so
a redirected or captured `sys.stdout` (pytest's capsys) gets the lines.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "bloomforge"


def rank_prefix() -> str:
    """'[rank N] ' under torchrun, so a message says which process wrote it; '' otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"[rank {os.environ.get('RANK', '?')}] "
    return ""


class ConsoleFormatter(logging.Formatter):
    """The one format: `MESSAGE` for progress, `bloomforge: [rank N] LEVEL: MESSAGE` for
    warnings and errors."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno < logging.WARNING:
            return text
        return f"bloomforge: {rank_prefix()}{record.levelname.lower()}: {text}"


class ConsoleHandler(logging.Handler):
    """INFO and below to `sys.stdout`, WARNING and above to `sys.stderr`, both looked up when
    the record is written (not when the handler is made)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def configure(level: int = logging.INFO) -> logging.Logger:
    """Give the `bloomforge` logger the console handler at `level`, once; a logger that already
    has handlers (set up here before, or by the program using bloomforge) is left as it is."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = ConsoleHandler()
        handler.setFormatter(ConsoleFormatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)
    return logger
