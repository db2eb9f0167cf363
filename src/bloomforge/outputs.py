"""Where a command may write, and one writer per folder at a time.

In: the output path a user typed, the inputs of the command, the user's `--overwrite`. Out:
`check_output` returns the path or raises a one-line `BloomforgeError`; `output_lock` holds
`.<name>.lock` beside the folder while a command writes it.

The rules (nothing a user types loses their work):
- an output that is an existing file, an input, or inside an input is refused;
- a training run folder (`checkpoints/`, or `config.yaml` + `metrics.jsonl`) is written only by
  the command that continues it (`allow_run_folder`), and never replaced, even with --overwrite;
- any other non-empty folder is refused unless it is the command's own earlier output
  (`reenter`) or the user passed --overwrite; even then not the working directory, the home
  folder or one of their parents, a folder holding an input, or one holding a run folder.

The lock is a `flock` on a file beside the folder (the folder itself may not exist yet, or be
replaced by a rename while locked). The kernel drops it when its process dies, so a lock file
left by a killed process is taken over; the file records pid, host and command so a refused
second writer can say who holds it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from bloomforge.errors import BloomforgeError

_SCAN_LIMIT = 200_000  # entries looked at for run folders below an --overwrite target


def is_run_folder(path: str | Path) -> bool:
    """A training run folder: `checkpoints/`, or `config.yaml` + `metrics.jsonl`."""
    path = Path(path)
    return (path / "checkpoints").is_dir() or (
        (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()
    )


def check_output(
    path: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    allow_run_folder: bool = False,
    reenter: Callable[[Path], bool] | None = None,
) -> Path:
    """`path` if a command may write its output there, else a one-line BloomforgeError.

    inputs: what the command reads (None entries ignored); the output may not be one of them
        or inside one, and an --overwrite target may not hold one.
    overwrite: the user asked to replace a non-empty folder (never a run folder).
    allow_run_folder: a training run folder is accepted and written into (train resuming).
    reenter: a non-empty folder for which `reenter(folder)` is true is the command's own
        earlier output, accepted and written into, nothing removed (run, prepare resuming).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BloomforgeError(f"{path}: is a broken symbolic link; remove it or write elsewhere")
    real = _real(path)
    existing = _first_existing(real)
    if existing.exists() and not existing.is_dir():
        if existing == real:
            raise BloomforgeError(f"{path}: is a file; the output must be a folder")
        raise BloomforgeError(f"{path}: {existing} is a file, so this folder cannot be made")
    ins = [(str(i), _real(Path(i))) for i in inputs if i is not None and str(i) != ""]
    for name, src in ins:
        if real == src:
            raise BloomforgeError(f"{path}: is also the input {name}; write to another folder")
        if real.is_relative_to(src):
            raise BloomforgeError(f"{path}: is inside the input {name}; write to another folder")
    entries = _entries(real)
    if not entries:
        return path
    if is_run_folder(real):
        if allow_run_folder:
            return path
        raise BloomforgeError(
            f"{path}: is a training run folder (checkpoints, metrics); other commands never "
            "write into or replace one, even with --overwrite: choose another folder"
        )
    if reenter is not None and reenter(real):
        return path
    held = [name for name, src in ins if src.is_relative_to(real)]
    if held:
        raise BloomforgeError(
            f"{path}: holds the input {held[0]}, which writing here would delete; "
            "choose another folder"
        )
    if not overwrite:
        raise BloomforgeError(
            f"{path}: folder is not empty (holds '{entries[0]}'); choose a new folder, "
            "or pass --overwrite to replace it"
        )
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    for guarded, what in ((cwd, "the working directory"), (home, "the home folder")):
        if guarded.is_relative_to(real):
            verb = "is" if guarded == real else "holds"
            raise BloomforgeError(f"{path}: {verb} {what}; --overwrite never replaces it")
    run = find_run_folder(real)
    if run is not None:
        raise BloomforgeError(
            f"{path}: holds the training run folder {run}; --overwrite never replaces "
            "checkpoints: choose another folder"
        )
    return path


def _entries(path: Path) -> list[str]:
    """The sorted names in folder `path`; none when it does not exist."""
    if not path.is_dir():
        return []
    try:
        return sorted(p.name for p in path.iterdir())
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot list the folder ({e.strerror})") from e


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _first_existing(path: Path) -> Path:
    """`path` or its nearest existing parent (a file there blocks making the folder)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def find_run_folder(root: str | Path) -> Path | None:
    """`root` or the first folder below it that is a training run folder; None if none."""
    root, seen = Path(root), 0
    for folder, dirs, _ in os.walk(root):
        if is_run_folder(folder):
            return Path(folder)
        seen += len(dirs)
        if seen > _SCAN_LIMIT:
            raise BloomforgeError(
                f"{root}: too many folders to check for training runs; remove it yourself "
                "or choose another folder"
            )
    return None


@contextlib.contextmanager
def claim_output(path: str | Path, **rules) -> Iterator[Path]:
    """`check_output(path, **rules)`, then hold `output_lock(path)` and check again under it
    (another writer may have filled the folder meanwhile); yields `path` as a Path."""
    check_output(path, **rules)
    with output_lock(path):
        yield check_output(path, **rules)


def lock_file(folder: str | Path) -> Path:
    """The lock of `folder`: `.<name>.lock` beside it."""
    real = _real(Path(folder))
    if real == real.parent:
        raise BloomforgeError(f"{folder}: cannot write into the root folder")
    return real.parent / f".{real.name}.lock"


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock of `folder` (created if needed, with its parents) while writing it.

    A second holder, in this process or another, gets a one-line BloomforgeError naming the
    folder and the owner (pid, host, command). Released on exit, exceptions included; a lock
    left by a dead process is taken over.
    """
    lock = lock_file(folder)
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BloomforgeError(f"{lock.parent}: cannot create folder ({e.strerror})") from e
    fd = _acquire(Path(folder), lock)
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                os.unlink(lock)
        os.close(fd)


def _acquire(folder: Path, lock: Path) -> int:
    import fcntl

    for _ in range(100):  # a lock file unlinked between our open and flock: open it again
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BloomforgeError(f"{lock}: cannot create lock file ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(lock)
            os.close(fd)
            raise BloomforgeError(_busy(folder, lock, owner)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise BloomforgeError(f"{lock}: cannot lock ({e.strerror})") from e
            owner = _read_owner(lock)  # no flock on this filesystem: trust the recorded owner
            if owner and _alive(owner):
                os.close(fd)
                raise BloomforgeError(_busy(folder, lock, owner)) from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": _command()[:200],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd
    raise BloomforgeError(f"{lock}: could not take the lock (it keeps being replaced)")


def _command() -> str:
    """This process's command line, `python -m bloomforge` shown as `bloomforge`."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("__main__.py", "-c", ""):
        name = "bloomforge" if "bloomforge" in sys.argv[0] else "python"
    return " ".join([name, *sys.argv[1:]])


def _read_owner(lock: Path) -> dict:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _alive(owner: dict) -> bool:
    """Whether the recorded owner may still run: its pid alive here, or on another host."""
    if owner.get("host") != socket.gethostname():
        return True  # cannot look at another machine's processes
    try:
        os.kill(int(owner["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _busy(folder: Path, lock: Path, owner: dict) -> str:
    who = (
        f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('since')}, "
        f"`{owner.get('command')}`"
        if owner
        else "another process"
    )
    return (
        f"{folder}: being written by {who}; wait for it to finish or write elsewhere (lock {lock})"
    )


def add_overwrite_flag(p: argparse.ArgumentParser) -> None:
    """The `--overwrite` flag of commands that write a folder (checked by `claim_output`)."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT when it is a non-empty folder (never a training run folder)",
    )
