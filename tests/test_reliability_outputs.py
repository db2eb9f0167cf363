"""Issue 21: nothing a user types loses their work. Every command that writes a folder refuses,
with one line and exit status 2, to replace a non-empty folder (without --overwrite), a training
run folder (even with it), its own input, or a file; and one writer per folder at a time (a lock
that a dead process's leftover does not block). Each refusal is checked by hashing every file
before and after: nothing changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bloomforge.checkpoint import load_checkpoint
from bloomforge.cli import main
from bloomforge.errors import BloomforgeError
from bloomforge.outputs import lock_file, output_lock
from bloomforge.tokenizer import byte_level_tokenizer


def tree(root: Path) -> dict[str, str]:
    """Every entry below `root` (hidden ones too): a file's SHA-256, or '<dir>'."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def refused(capsys, root: Path, argv: list, needle: str) -> str:
    """Run the CLI: exit 2, one stderr line holding `needle`, nothing under `root` changed."""
    before = tree(root)
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("bloomforge: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and needle in err, err
    assert tree(root) == before
    return err


def ok(capsys, argv: list) -> str:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A checkpoint `m` (model init), its HF export `hf`, and a training run folder `run`."""
    root = tmp_path_factory.mktemp("made")
    assert main(["model", "init", "micro", str(root / "m"), "vocab_size=260"]) == 0
    assert main(["export", str(root / "m"), str(root / "hf")]) == 0
    run = root / "run"
    shutil.copytree(root / "m", run / "checkpoints" / "step_00000002")
    shutil.copyfile(root / "m" / "config.yaml", run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.5}\n{"step": 2, "loss": 5.4}\n')
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"\x00tb events")
    return root


@pytest.fixture
def work(made, tmp_path) -> Path:
    for name in ("m", "hf", "run"):
        shutil.copytree(made / name, tmp_path / name)
    return tmp_path


def _command(kind: str, work: Path, out: Path) -> list:
    return {
        "export": ["export", work / "m", out],
        "import": ["import", work / "hf", out],
        "init": ["model", "init", "micro", out, "vocab_size=260"],
    }[kind]


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "run", "run"],
        ["export", "run", "run", "--overwrite"],
        ["export", "run/checkpoints/step_00000002", "run", "--overwrite"],
        ["export", "m", "run"],
        ["export", "m", "run", "--overwrite"],
    ],
)
def test_export_never_replaces_a_run_folder(work, capsys, argv):
    argv = [str(work / a) if a in ("run", "m") or a.startswith("run/") else a for a in argv]
    err = refused(capsys, work, argv, str(work / "run"))
    assert "is also the input" in err or "training run folder" in err


@pytest.mark.parametrize("kind", ["export", "import", "init"])
def test_non_empty_folder_is_refused_without_overwrite(work, capsys, kind):
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("my notes")
    err = refused(capsys, work, _command(kind, work, work / "mine"), "not empty")
    assert "--overwrite" in err and "notes.txt" in err


@pytest.mark.parametrize("kind", ["export", "import", "init"])
def test_overwrite_replaces_a_plain_folder(work, capsys, kind):
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("my notes")
    ok(capsys, [*_command(kind, work, work / "mine"), "--overwrite"])
    assert not (work / "mine" / "notes.txt").exists()
    if kind == "export":
        assert json.loads((work / "mine" / "config.json").read_text())["model_type"] == "bloom"
    else:
        assert load_checkpoint(work / "mine").recipe.model.n_layer >= 1


@pytest.mark.parametrize("kind", ["export", "import", "init"])
def test_overwrite_refuses_a_run_folder_or_a_folder_holding_one(work, capsys, kind):
    refused(capsys, work, [*_command(kind, work, work / "run"), "--overwrite"], "run folder")
    shutil.move(work / "run", work / "runs" / "t1")
    err = refused(capsys, work, [*_command(kind, work, work / "runs"), "--overwrite"], "runs")
    assert "t1" in err and "never replaces checkpoints" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["export", "m", "m"], "is also the input"),
        (["export", "m", "m/hf"], "is inside the input"),
        (["export", "m", ".", "--overwrite"], "holds the input"),
        (["import", "hf", "hf"], "is also the input"),
        (["import", "hf", "hf/ckpt"], "is inside the input"),
        (
            ["model", "init", "micro", "hf", "vocab_size=260", "--tokenizer", "hf", "--overwrite"],
            "is also the input",
        ),
    ],
)
def test_output_is_not_the_input_nor_inside_it(work, capsys, monkeypatch, argv, needle):
    monkeypatch.chdir(work)
    refused(capsys, work, argv, needle)


def test_overwrite_never_replaces_the_working_directory(work, capsys, monkeypatch):
    (work / "sub").mkdir()
    (work / "sub" / "notes.txt").write_text("my notes")
    monkeypatch.chdir(work / "sub")
    refused(capsys, work, ["export", work / "m", ".", "--overwrite"], "the working directory")
    refused(capsys, work, ["export", work / "m", work, "--overwrite"], "holds")


@pytest.mark.parametrize("kind", ["export", "import", "init"])
def test_output_that_is_a_file_is_refused(work, capsys, kind):
    (work / "f").write_text("a file of mine")
    refused(capsys, work, _command(kind, work, work / "f"), "is a file")
    refused(capsys, work, _command(kind, work, work / "f" / "sub"), "is a file")


def test_stage_outputs_that_are_files_or_full_folders(work, capsys):
    tok = work / "tok"
    tok.mkdir()
    byte_level_tokenizer().save(str(tok / "tokenizer.json"))
    text = work / "fr.txt"
    text.write_text("Le chat dort sur le tapis.\nUn autre jour se lève.\n" * 20)
    (work / "f").write_text("a file of mine")
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("my notes")
    tokenize = ["data", "tokenize", "--tokenizer", tok, "--input", f"fr={text}", "--workers", 1]
    fertility = ["tokenizer", "fertility", "--tokenizer", tok, "--text", f"fr={text}"]
    train = ["tokenizer", "train", "--input", f"fr={text}", "--vocab-size", 300]
    for argv in (tokenize, fertility, train):
        refused(capsys, work, [*argv, "--out", work / "f"], "is a file")
        refused(capsys, work, [*argv, "--out", work / "mine"], "not empty")
        refused(capsys, work, [*argv, "--out", text], "is a file")
    for argv in (tokenize, fertility):
        refused(capsys, work, [*argv, "--out", tok], "is also the input")
    refused(capsys, work, [*tokenize, "--out", tok / "tokens"], "inside the input")
    ok(capsys, [*tokenize, "--out", work / "mine", "--overwrite"])
    assert (work / "mine" / "manifest.json").is_file()
    assert not (work / "mine" / "notes.txt").exists()


def test_data_report_keeps_a_users_report(tmp_path, capsys):
    from test_report import hand_stats

    (tmp_path / "stats.json").write_text(json.dumps(hand_stats()))
    (tmp_path / "report.html").write_text("<html>my own report</html>")
    refused(capsys, tmp_path, ["data", "report", tmp_path], "report.html")
    (tmp_path / "report.html").unlink()
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "draft.md").write_text("my draft")
    refused(capsys, tmp_path, ["data", "report", tmp_path], "not an earlier data report")
    shutil.rmtree(tmp_path / "report")
    ok(capsys, ["data", "report", tmp_path])
    ok(capsys, ["data", "report", tmp_path])  # its own earlier report is replaced


RUN_RECIPE = "model: {preset: micro}\nworkers: 1\n"


def test_run_refuses_a_training_run_and_folders_of_other_things(work, capsys):
    recipe = work / "r.yaml"
    recipe.write_text(RUN_RECIPE)
    refused(capsys, work, ["run", recipe, "--out", work / "run"], "training run folder")
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("my notes")
    refused(capsys, work, ["run", recipe, "--out", work / "mine"], "not a bloomforge run folder")
    (work / "mine" / "notes.txt").unlink()
    (work / "mine" / "recipe.yaml").write_text("my: recipe\n")
    refused(capsys, work, ["run", recipe, "--out", work / "mine"], "recipe.yaml")
    refused(capsys, work, ["run", recipe, "--out", recipe], "is a file")
    refused(capsys, work, ["demo", "--out", work / "run"], "training run folder")


def test_run_force_never_clears_a_training_run_it_did_not_write(work, capsys):
    recipe = work / "r.yaml"
    recipe.write_text(RUN_RECIPE)
    out = work / "pipe"
    for rel in ("data/documents/a.jsonl", "tokenizer/tokenizer.json", "tokens/manifest.json"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("{}\n")
    (out / "heldout").mkdir()
    shutil.copytree(work / "run", out / "train")
    before = tree(work)
    argv = ["run", recipe, "--out", out, "--from", "train", "--until", "train", "--force"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force never replaces checkpoints" in err, err
    after = tree(work)  # the run's own recipe.yaml and .stages/ are new; nothing else changed
    assert {k: after.get(k) for k in before} == before
    assert {k for k in after if k not in before} <= {"pipe/recipe.yaml", "pipe/.stages"}


def test_second_writer_is_refused_while_the_lock_is_held(work, capsys):
    out = work / "hf2"
    with output_lock(out):
        for kind in ("export", "import", "init"):
            err = refused(capsys, work, _command(kind, work, out), str(out))
            assert f"pid {os.getpid()} on {socket.gethostname()}" in err
    assert not lock_file(out).exists()  # released
    ok(capsys, _command("export", work, out))


def test_lock_held_by_another_process_then_killed(work, capsys):
    out = work / "hf2"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from bloomforge.outputs import output_lock\n"
         f"with output_lock({str(out)!r}):\n print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        err = refused(capsys, work, _command("export", work, out), str(out))
        assert f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert lock_file(out).exists()
    ok(capsys, _command("export", work, out))
    assert not lock_file(out).exists()


def test_stale_lock_of_a_dead_pid_is_taken_over(work, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = work / "hf2"
    owner = {"pid": dead.pid, "host": socket.gethostname(), "since": "yesterday"}
    lock_file(out).write_text(json.dumps(owner))
    ok(capsys, _command("export", work, out))
    assert (out / "config.json").is_file() and not lock_file(out).exists()


def test_lock_is_held_while_writing_and_released_when_the_command_fails(work, capsys, monkeypatch):
    out, seen = work / "hf2", []

    def failing_export(ckpt, folder):
        seen.append(json.loads(lock_file(out).read_text())["pid"])
        raise BloomforgeError(f"{folder}: disk full")

    monkeypatch.setattr("bloomforge.interop.export_hf", failing_export)
    refused(capsys, work, ["export", work / "m", out], "disk full")
    assert seen == [os.getpid()] and not lock_file(out).exists()
    with output_lock(out):
        pass
