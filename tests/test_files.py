"""bloomforge.files: temp name, fsync, rename, clean-up on error, for every writer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
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


# -- every writer of a run goes through bloomforge.files -------------------------------------
# What a command chain writes outside bloomforge.files, by design (module docstring): streams
# appended while a run goes on (metrics, TensorBoard events, codecarbon's emissions rows).
APPENDED = ("metrics.jsonl", "emissions.csv", "events.out.tfevents.")
ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "tiny.yaml")
CHAIN = """
import sys
from pathlib import Path
from bloomforge.cli import main

root, recipe = Path(sys.argv[1]), sys.argv[2]

def step(*argv):
    code = main([str(a) for a in argv])
    if code:
        sys.exit(code)

docs = root / "in" / "docs.jsonl"
step("data", "tokenize", "--tokenizer", root / "in" / "tokenizer.json", "--input", f"fr={docs}",
     "--out", root / "tokens", "--no-progress", "--overwrite")
resume = ["--resume"] if any((root / "run" / "checkpoints").glob("step_*")) else []
step("train", *resume, recipe, "model=micro", f"data.tokens={root / 'tokens'}", "data.seq_len=32",
     "train.global_batch_size=4", "train.micro_batch_size=2", "train.warmup_tokens=0",
     "train.decay_tokens=256", "train.max_tokens=256", "train.save_every=1", f"out={root / 'run'}")
ckpt = sorted((root / "run" / "checkpoints").glob("step_*"))[-1]
step("export", ckpt, root / "hf")
step("eval", ckpt, "--perplexity", f"fr={docs}", "--device", "cpu",
     "--out", root / "eval" / "results.json")
"""


def _chain(root: Path, **env: str) -> subprocess.CompletedProcess:
    log = {"BLOOMFORGE_WRITE_LOG": str(root / "written.log")}  # every run, killed ones too
    full = {**os.environ, "CODECARBON_LOG_LEVEL": "error", **log, **env}
    return subprocess.run(
        [sys.executable, "-c", CHAIN, str(root), RECIPE],
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _outputs(root: Path) -> list[Path]:
    """Every file the chain left, temporaries (and what is inside them) aside."""
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.relative_to(root).parts[0] != "in"
        and not any(files.is_temporary(part) for part in p.relative_to(root).parts)
    ]


def _check_whole(root: Path) -> list[str]:
    """Read back every output the way its readers do; a half-written file fails here."""
    from safetensors import safe_open

    from bloomforge.checkpoint import verify

    checked = []
    for p in _outputs(root):
        if p.suffix == ".json":
            json.loads(p.read_text("utf-8"))
        elif p.suffix == ".yaml":
            assert isinstance(yaml.safe_load(p.read_text("utf-8")), dict), p
        elif p.suffix == ".safetensors":
            with safe_open(str(p), "pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    f.get_tensor(key)
        elif p.suffix == ".jsonl":
            for line in p.read_text("utf-8").splitlines():
                json.loads(line)
        checked.append(str(p.relative_to(root)))
    for ckpt in (root / "run" / "checkpoints").glob("step_*"):
        assert verify(ckpt, require=True) is None, ckpt  # sha256 of every file
    if (root / "tokens").exists():
        manifest = json.loads((root / "tokens" / "manifest.json").read_text())
        for shard in manifest["shards"]:
            assert (root / "tokens" / shard["file"]).is_file(), shard
    return checked


@pytest.fixture(scope="module")
def chain_inputs(tmp_path_factory) -> Path:
    from bloomforge.tokenizer import byte_level_tokenizer

    root = tmp_path_factory.mktemp("chain")
    (root / "in").mkdir()
    byte_level_tokenizer().save(str(root / "in" / "tokenizer.json"))
    lines = [json.dumps({"text": f"Le chat numéro {i} dort sur le tapis. " * 3}) for i in range(60)]
    (root / "in" / "docs.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_a_writer_killed_mid_write_leaves_no_half_written_file(chain_inputs: Path) -> None:
    """tokenize -> train (2 checkpoints) -> export -> eval --out in one folder, killed with
    SIGKILL in the middle of its 6th and then 14th write (a file inside the first checkpoint
    folder; the export folder), rerun after each kill, then run to the end: after every kill
    each file present reads back whole, and at the end every file of the folder came through
    bloomforge.files (or is a documented append stream)."""
    root = chain_inputs
    for n in (6, 14):
        done = _chain(root, BLOOMFORGE_FAULT_WRITE=str(n))
        assert done.returncode == -signal.SIGKILL, (n, done.returncode, done.stderr[-2000:])
        _check_whole(root)
    assert any(files.is_temporary(p) for p in root.rglob("*"))  # the kills did leave some
    done = _chain(root)
    assert done.returncode == 0, done.stderr[-2000:]
    checked = _check_whole(root)
    assert "hf/model.safetensors" in checked and "eval/results.json" in checked
    written = {Path(line) for line in (root / "written.log").read_text().splitlines()}
    stray = [
        rel
        for rel in checked
        if rel != "written.log"
        and not any(a in written for a in [(root / rel).resolve(), *(root / rel).resolve().parents])
        and not any(name in Path(rel).name for name in APPENDED)
    ]
    assert stray == [], f"written outside bloomforge.files: {stray}"


# -- and no module writes a file any other way ---------------------------------------------
WRITES = re.compile(
    r"os\.replace\(|os\.rename\(|shutil\.move\(|\.(replace|rename)\([^,()\"']+\)"
    r"|\.write_text\(|\.write_bytes\(|open\([^)]*[\"'](w|wb|a|ab|x|w\+|r\+b?)[\"']"
    r"|mkstemp\(|NamedTemporaryFile\(|\.tofile\(|json\.dump\(|safe_dump\([^)]*,|np\.save"
    r"|savefig\((?!buf)|save_file\(|\.save\(str\(|to_parquet\(|\.to_csv\("
)


def test_no_module_writes_files_but_through_bloomforge_files() -> None:
    """Every write call outside bloomforge/files.py is a `files.*` call or carries
    `# files: <why>` on its line or the line above (inside an atomic_directory, a scratch
    TemporaryDirectory, an append stream, a log, a kernel control file)."""
    offenders = []
    for path in sorted((ROOT / "src" / "bloomforge").rglob("*.py")):
        if path.name == "files.py" and path.parent.name == "bloomforge":
            continue
        lines = path.read_text("utf-8").splitlines()
        for i, line in enumerate(lines):
            code = line.split("#", 1)[0] if "# files:" not in line else ""
            if "files." in code.split("(", 1)[0] or not WRITES.search(code):
                continue
            if i and lines[i - 1].strip().startswith("# files:"):
                continue
            offenders.append(f"{path.relative_to(ROOT)}:{i + 1}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_the_static_check_finds_a_bypassing_write() -> None:
    for line in [
        'tmp.write_text("x")',
        "os.replace(tmp, path)",
        "tmp.replace(path)",
        'open(path, "w", encoding="utf-8")',
        "fig.savefig(path, dpi=90)",
    ]:
        assert WRITES.search(line), line
    assert not WRITES.search('name.replace("-", "_")')
