"""Every command logs through one console format (`bloomforge.log`): library code logs with
`logging.getLogger(__name__)`, never `print`; progress goes to stdout as the message itself,
warnings and errors to stderr as `bloomforge: [rank N] warning: ...`."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

from bloomforge import log
from bloomforge.cli import main
from bloomforge.pipeline.runner import Context
from bloomforge.training.metrics import MetricsLog

SRC = Path(__file__).resolve().parents[1] / "src" / "bloomforge"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_a_command_logs_its_progress_in_the_one_format(tmp_path, capsys):
    argv = ["mtf", "build", "--templates", str(SHARED / "mtf" / "promptsource")]
    argv += ["--task", f"xquad={SHARED / 'mtf' / 'xquad'}", "--max-per-dataset", "5"]
    assert main([*argv, "--out", str(tmp_path / "xp3")]) == 0
    out = capsys.readouterr().out.splitlines()
    logged = [line for line in out if line.startswith("mtf build: xquad: ")]
    assert len(logged) == 1 and logged[0].endswith(" records"), out  # the message, unadorned
    handlers = logging.getLogger("bloomforge").handlers
    assert [type(h) for h in handlers] == [log.ConsoleHandler]  # configured once, however often
    assert main([]) == 0  # a second command in the same process adds no second handler
    assert len(logging.getLogger("bloomforge").handlers) == 1


def test_warnings_go_to_stderr_with_the_cli_prefix(capsys, monkeypatch):
    log.configure()
    library = logging.getLogger("bloomforge.mtf.loader")
    library.info("step %d of %d", 3, 4)
    library.warning("data.mtf: set aside %s", "2 records")
    captured = capsys.readouterr()  # a stream captured after the handler was made still gets it
    assert captured.out == "step 3 of 4\n"
    assert captured.err == "bloomforge: warning: data.mtf: set aside 2 records\n"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    library.error("out of memory")
    assert capsys.readouterr().err == "bloomforge: [rank 1] error: out of memory\n"


def test_training_and_pipeline_lines_are_log_records(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bloomforge")
    for rank in (0, 1):  # ranks other than 0 under torchrun log nothing
        metrics = MetricsLog(tmp_path, tensorboard=False, enabled=rank == 0)
        metrics.info(f"step 1/2 | loss 5.0 (rank {rank})")
        metrics.close()
    Context(tmp_path, None).echo("[train] done in 1.0 s")  # type: ignore[arg-type]
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("bloomforge.training.metrics", "step 1/2 | loss 5.0 (rank 0)"),
        ("bloomforge.pipeline.runner", "[train] done in 1.0 s"),
    ]
    assert caplog.records[0].filename == Path(__file__).name  # where the line was logged


def test_library_code_does_not_print():
    """`print` is a command's output (`*/commands.py`, `*_cli.py`, `cli.py`); library code logs."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name in ("commands.py", "cli.py") or path.name.endswith("_cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, found
