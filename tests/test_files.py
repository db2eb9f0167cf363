"""bloomforge.files: temp name, fsync, rename, clean-up on error, for every writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from bloomforge import files


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if files.is_temporary(p))


def test_each_writer_round_trips_and_leaves_no_temporary(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files.write_text(tmp_path / "a.txt", "héllo\n")
    files.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    files.write_json(tmp_path / "c.json", {"k": "é", "n": [1, 2]})
    files.write_yaml(tmp_path / "d.yaml", {"z": 1, "a": [1, 2]})
    files.write_array(tmp_path / "e.u16", np.arange(5, dtype=np.uint16))
    files.write_arrays(tmp_path / "f.npz", x=np.arange(3))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    files.write_figure(tmp_path / "g.png", fig)
    plt.close(fig)
    assert (tmp_path / "a.txt").read_text("utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    # same text as json.dumps with the same options (the reference)
    want = json.dumps({"k": "é", "n": [1, 2]}, indent=1, ensure_ascii=False) + "\n"
    assert (tmp_path / "c.json").read_text("utf-8") == want
    assert list(yaml.safe_load((tmp_path / "d.yaml").read_text())) == ["z", "a"]  # order kept
    assert np.fromfile(tmp_path / "e.u16", dtype=np.uint16).tolist() == [0, 1, 2, 3, 4]
    assert np.load(tmp_path / "f.npz")["x"].tolist() == [0, 1, 2]
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _leftovers(tmp_path) == []
    # the mode of an ordinary open(): 0o666 & ~umask, not mkstemp's 0o600
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


class Boom(Exception):
    pass


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_write_that_fails_midway_keeps_the_old_file_and_no_temporary(
    tmp_path: Path, error: type[BaseException]
) -> None:
    target = tmp_path / "out.json"
    files.write_json(target, {"old": True})
    before = target.read_bytes()
    with pytest.raises(error), files.atomic_file(target) as f:
        f.write('{"new": ')  # half a record written ...
        raise error()  # ... then the writer fails
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []

    class Bad:  # a payload that raises while it is being serialised
        def __str__(self) -> str:
            raise error()

    with pytest.raises(error):
        files.write_json(target, {"x": Bad()}, default=str)
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_a_folder_that_fails_midway_keeps_the_old_folder(
    tmp_path: Path, error: type[BaseException]
) -> None:
    out = tmp_path / "folder"
    with files.atomic_directory(out) as tmp:
        files.write_text(tmp / "a.txt", "old")
    with pytest.raises(error), files.atomic_directory(out) as tmp:
        files.write_text(tmp / "a.txt", "new")
        raise error()
    assert (out / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    with files.atomic_directory(out) as tmp:  # a complete one replaces it whole
        files.write_text(tmp / "b.txt", "new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_data_and_the_rename_are_fsynced(tmp_path: Path, monkeypatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    files.write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2  # the file, then its folder (the rename)
    synced.clear()
    with files.atomic_directory(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        files.write_text(tmp / "sub" / "b.txt", "y")  # 2
    # the file again, sub/, the temporary folder, and the parent after the rename
    assert len(synced) == 2 + 4


def test_side_file_is_whole_or_absent(tmp_path: Path) -> None:
    with files.side_file(tmp_path, 3) as f:
        f.write("one\n")
    assert (tmp_path / "00003.jsonl").read_text() == "one\n"
    with files.side_file(tmp_path, 3) as f:  # a rerun that found nothing: no stale list
        pass
    assert not (tmp_path / "00003.jsonl").exists()
    with files.side_file(tmp_path, 4) as f:
        f.write("\udcff\n")  # a lone surrogate from a bad input byte is kept, escaped
    assert (tmp_path / "00004.jsonl").read_text() == "\\udcff\n"
    assert _leftovers(tmp_path) == []
