"""Every file bloomforge writes goes through here, with one guarantee.

In: a final path and what to put there (text, bytes, JSON, YAML, an array, a matplotlib
figure, a stream written piece by piece, or a whole folder). Out: the file (or folder) at that
path, complete, or the previous content untouched.

The guarantee, the same for every function:
1. the data is written under a temporary name in the same folder (`.NAME.tmp-XXXXXXXX`, a
   dot file, so globs and listings of outputs skip it);
2. flushed and `os.fsync`ed (for a folder: every file in it and the folder itself);
3. renamed into place with `os.replace` (atomic on POSIX within one file system), then the
   parent folder is fsynced so the rename itself survives a power cut;
4. on any error, KeyboardInterrupt included, the temporary is removed and re-raised; what was
   at the final path before is left as it was.
A process killed mid-write (SIGKILL, OOM, node loss) can leave a `.NAME.tmp-*` behind but never
a half-written NAME; `is_temporary` names those leftovers.

What is not covered, and why: streams that grow while a run goes on, where replacing the file
at each record would cost O(n^2) - `metrics.jsonl` (appended per step; a line cut by a kill is
dropped at resume by `training.metrics`), TensorBoard event files, codecarbon's
`emissions.csv` rows, datatrove's per-task logs. Files streamed by a library into a folder that
is itself built by `atomic_directory` (safetensors, `tokenizers`, datatrove token shards) are
covered by that folder's rename. A call that writes any other way is refused by
tests/test_files.py unless its line (or the one above) says `# files: <why>`.

Test hooks (tests/test_files.py): `BLOOMFORGE_FAULT_WRITE=N` kills this process with SIGKILL
in the middle of its N-th write (the temporary half written, before the rename), so tests can
check that no command leaves a half-written file; `BLOOMFORGE_WRITE_LOG=FILE` appends the final
path of every completed write to FILE, so tests can check that every file of a run folder came
through here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

_TMP = ".tmp-"
_writes = 0  # commits so far in this process (for BLOOMFORGE_FAULT_WRITE)


def is_temporary(path: str | Path) -> bool:
    """A leftover of an interrupted write (`.NAME.tmp-*` or `.NAME.old-*`)."""
    name = Path(path).name
    return name.startswith(".") and (_TMP in name or ".old-" in name)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP}{secrets.token_hex(4)}")


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (a rename), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fault(victim: Path) -> None:
    """BLOOMFORGE_FAULT_WRITE=N: on the N-th write, cut the temporary file (or the largest file
    of a temporary folder) to half its size and die as a killed process would."""
    global _writes
    want = os.environ.get("BLOOMFORGE_FAULT_WRITE")
    if not want:
        return
    _writes += 1
    if _writes != int(want):
        return
    files = [victim] if victim.is_file() else [p for p in victim.rglob("*") if p.is_file()]
    if files:
        big = max(files, key=lambda p: p.stat().st_size)
        os.truncate(big, big.stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGKILL)


def _written(path: Path) -> None:
    log = os.environ.get("BLOOMFORGE_WRITE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{path.resolve()}\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` for a library that writes to a path itself
    (sqlite3, safetensors, `tokenizers`); fsynced and renamed into place when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        _fault(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
        _written(path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_file(
    path: str | Path,
    mode: str = "w",
    *,
    encoding: str | None = "utf-8",
    errors: str | None = None,
    drop_empty: bool = False,
) -> Iterator[IO[Any]]:
    """An open file (mode "w" or "wb") to write `path` piece by piece, renamed into place when
    the block ends. drop_empty: if nothing was written, no file is left at `path` (an older one
    is removed), as for the per-rank lists of set-aside records."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    binary = mode == "wb"
    # O_EXCL on a fresh random name; 0o666 & ~umask like open(), not mkstemp's 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        f = os.fdopen(fd, mode, encoding=None if binary else encoding, errors=errors)
    except BaseException:
        os.close(fd)
        _remove(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            _fault(tmp)
            os.fsync(f.fileno())
            empty = f.tell() == 0
        if drop_empty and empty:
            tmp.unlink()
            path.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
        _written(path)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def write_json(
    path: str | Path,
    obj: Any,
    *,
    indent: int | None = 1,
    ensure_ascii: bool = False,
    sort_keys: bool = False,
    default: Any = None,
    newline: bool = True,
) -> None:
    """`json.dumps(obj, ...)` (+ a final newline unless newline=False)."""
    text = json.dumps(
        obj, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys, default=default
    )
    write_text(path, text + ("\n" if newline else ""))


def write_yaml(path: str | Path, obj: Any) -> None:
    """Safe YAML, keys in the order given."""
    import yaml

    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def write_array(path: str | Path, array: np.ndarray) -> None:
    """The raw bytes of `array` (`ndarray.tofile` semantics: no header)."""
    import numpy as np

    write_bytes(path, np.ascontiguousarray(array).tobytes())


def write_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    """`np.savez` of the named arrays."""
    import numpy as np

    with atomic_file(path, "wb") as f:
        np.savez(f, **arrays)


def write_figure(path: str | Path, fig: Any, **savefig: Any) -> None:
    """A matplotlib figure, in the format of the path's suffix (png by default)."""
    path = Path(path)
    savefig.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_file(path, "wb") as f:
        fig.savefig(f, **savefig)


def side_file(folder: str | Path, rank: int) -> Any:
    """The per-rank list of set-aside records `folder/RANK.jsonl` (an open text file): written
    whole or not at all; left absent (an older one removed) when nothing was written."""
    path = Path(folder) / f"{rank:05d}.jsonl"
    return atomic_file(path, "w", errors="backslashreplace", drop_empty=True)


def move(src: str | Path, dst: str | Path) -> None:
    """Move a complete file (written elsewhere, e.g. by DCP in a staging folder) to `dst`,
    typically inside a folder being built by `atomic_directory`."""
    os.replace(src, dst)


@contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside `out` to build a whole folder in. On success every file in
    it is fsynced and it replaces `out` (the old one moved aside first and removed after, so
    `out` is never a mix of both); on any error it is removed and `out` is left untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TMP}", dir=out.parent))
    try:
        yield tmp
        _fault(tmp)
        _fsync_tree(tmp)  # the data is on disk before the rename makes it visible
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
        _fsync(out.parent)
        _written(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_dir():
            _fsync(path)
    _fsync(root)
