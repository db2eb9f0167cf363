"""Hostile but realistic input to `bloomforge train` and the checkpoint readers, through the CLI.

Every case asserts the exit code (2: user error, 1: the run had to stop), a one-line message
without a traceback, and that nothing written before changed (every file hashed before/after).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from bloomforge.cli import main
from token_data import corpus_lines, write_token_folder

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    write_token_folder(out, {("ud", "fr"): corpus_lines("fr", 150)})
    return out


def _base(tokens: Path, out: Path, steps: int = 6) -> list[str]:
    return [
        "train",
        RECIPE,
        "model=micro",
        f"data.tokens={tokens}",
        "data.seq_len=32",
        "train.global_batch_size=4",
        "train.micro_batch_size=2",
        "train.warmup_tokens=0",
        f"train.decay_tokens={steps * 128}",
        f"train.max_tokens={steps * 128}",
        "train.save_every=4",
        f"out={out}",
    ]


def _hashes(*folders: Path) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("bloomforge:")]
    return code, "\n".join(lines), err


def _assert_user_error(args, capsys, *needles, code=2):
    got, line, err = _run(args, capsys)
    assert got == code, err
    assert "Traceback" not in err
    assert len(line.splitlines()) == 1, err
    for n in needles:
        assert n in line, line
    return line


@pytest.mark.parametrize(
    "override,needle",
    [
        ("data.seq_len=0", "key 'data.seq_len': must be >= 1, got 0"),
        ("data.seq_len=-5", "key 'data.seq_len': must be >= 1, got -5"),
        ("train.micro_batch_size=0", "key 'train.micro_batch_size': must be >= 1"),
        ("train.global_batch_size=-16", "key 'train.global_batch_size': must be >= 1"),
        ("train.lr=-1", "key 'train.lr': must be >= 0"),
        ("train.lr=nan", "key 'train.lr': must be a finite number"),
        ("train.min_lr=1", "key 'train.min_lr': must be <= train.lr"),
        ("train.warmup_tokens=1e12", "key 'train.warmup_tokens': must be <= train.decay_tokens"),
        ("train.rampup_batch_size=[64,16,1000]", "start 64 must be <= train.global_batch_size"),
        ("train.max_tokens=-5", "key 'train.max_tokens': must be > 0"),
        ("train.device=tpu", "key 'train.device': must be auto, cpu, cuda or cuda:N"),
        ("model.preset.x=1", "key 'model.preset': expected a preset name"),
        ("model.hidden_dropout=1.5", "key 'model.hidden_dropout': must be >= 0 and < 1"),
        ("parallel.zero=1", "key 'parallel.zero'"),
        ("parallel.tp=0", "key 'parallel.tp': must be >= 1"),
        ("data.valid_fraction=1", "key 'data.valid_fraction': must be >= 0 and < 1"),
        ("train.beta2=1", "key 'train.beta2'"),
        ("train.beta1=-0.1", "key 'train.beta1': must be >= 0 and < 1"),
        ("train.clip_grad=-1", "key 'train.clip_grad': must be >= 0"),
        ("train.eps=0", "key 'train.eps': must be > 0"),
        ("train.eval_every=-1", "key 'train.eval_every': must be >= 0"),
        ("train.exit_duration_mins=0", "key 'train.exit_duration_mins': must be > 0"),
        ("train.spike_window=0", "key 'train.spike_window': must be >= 1"),
        ("train.min_loss_scale=0", "key 'train.min_loss_scale': must be > 0"),
        ("model.ffn_hidden_size=0", "key 'model.ffn_hidden_size': must be >= 1"),
        ("model.layer_norm_eps=0", "key 'model.layer_norm_eps': must be > 0"),
        ("model.rotary_base=-1", "key 'model.rotary_base': must be > 0"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_out_of_range_values_are_one_line_errors(
    tokens, tmp_path, capsys, override, needle, dry_run
):
    out = tmp_path / "run"
    args = _base(tokens, out) + [override] + (["--dry-run"] if dry_run else [])
    _assert_user_error(args, capsys, needle)
    assert not out.exists()


def test_a_folder_as_the_recipe(tmp_path, capsys):
    _assert_user_error(["train", str(tmp_path)], capsys, "is a folder, not a YAML file")


def test_out_is_an_existing_file(tokens, tmp_path, capsys):
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    _assert_user_error(_base(tokens, out), capsys, f"{out}: is a file")
    assert out.read_text() == "mine"


def test_missing_token_folder_and_tokenizer_path_are_named(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    args = _base(tokens, out)
    missing = tmp_path / "nope"
    args = [a if not a.startswith("data.tokens=") else f"data.tokens={missing}" for a in args]
    _assert_user_error(args, capsys, f"data.tokens={missing}: no such folder")
    args = [*_base(tokens, out), f"tokenizer.path={missing}"]
    _assert_user_error(args, capsys, f"tokenizer.path={missing}: no tokenizer.json there")


def test_flex_on_cpu_is_refused_before_any_work(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    _assert_user_error(
        [*_base(tokens, out), "model.attn_impl=flex"], capsys, "model.attn_impl=flex"
    )
    assert not out.exists()


def test_a_run_that_cannot_learn_stops_with_exit_1(tokens, tmp_path, capsys):
    """lr=1e6 used to skip 97 of 98 steps and end "done" with a NaN checkpoint, exit 0."""
    out = tmp_path / "run"
    args = [*_base(tokens, out, steps=40), "train.lr=1e6", "train.max_consecutive_skips=5"]
    line = _assert_user_error(args, capsys, "steps in a row were skipped", code=1)
    assert "train.max_consecutive_skips=5" in line
    for ckpt in (out / "checkpoints").glob("step_*"):  # whatever was saved is finite
        assert all(t.isfinite().all() for t in load_file(ckpt / "model.safetensors").values())


def _finished_run(tokens, out, capsys) -> Path:
    assert main([str(a) for a in _base(tokens, out)]) == 0  # 6 steps: saves at 4 and 6
    capsys.readouterr()
    return out / "checkpoints" / "step_00000006"


def test_damaged_final_checkpoint_is_recomputed_on_resume(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    final = _finished_run(tokens, out, capsys)
    good = (final / "model.safetensors").read_bytes()
    (final / "model.safetensors").write_bytes(good[:-100])  # truncated
    with pytest.warns(UserWarning, match="step_00000006"):
        assert main([*_base(tokens, out), "--resume"]) == 0
    assert (final / "model.safetensors").read_bytes() == good  # recomputed bit for bit
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "valid"] == [6]  # the old row was replaced


def test_resuming_a_finished_run_changes_nothing(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    _finished_run(tokens, out, capsys)
    before = _hashes(out / "checkpoints")
    metrics = (out / "metrics.jsonl").read_text()
    assert main([*_base(tokens, out), "--resume"]) == 0
    assert _hashes(out / "checkpoints") == before
    assert (out / "metrics.jsonl").read_text() == metrics  # no duplicate validation row


def test_interrupted_save_leftovers_are_removed_at_the_next_start(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    final = _finished_run(tokens, out, capsys)
    leftovers = [
        out / "checkpoints" / ".step_00000008.tmp-abc123",
        out / "checkpoints" / ".staging-step_00000008",
    ]
    for p in leftovers:
        shutil.copytree(final, p)
    assert main([*_base(tokens, out), "--resume"]) == 0
    assert not any(p.exists() for p in leftovers)


@pytest.mark.parametrize("command", ["export", "generate", "eval"])
def test_readers_verify_checksums(tokens, tmp_path, capsys, command):
    """A byte-flipped checkpoint used to be exported (and evaluated) as it was, exit 0."""
    out = tmp_path / "run"
    final = _finished_run(tokens, out, capsys)
    data = bytearray((final / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (final / "model.safetensors").write_bytes(bytes(data))
    text = tmp_path / "fr.txt"
    text.write_text("Le chat dort.\nIl pleut.\n")
    before = _hashes(out)
    args = {
        "export": ["export", final, tmp_path / "hf"],
        "generate": ["generate", final, "--prompt", "Le", "--max-new-tokens", "2"],
        "eval": ["eval", final, "--perplexity", f"fr={text}"],
    }[command]
    _assert_user_error(args, capsys, "model.safetensors: checksum mismatch")
    assert _hashes(out) == before
    assert not (tmp_path / "hf").exists()


def test_nan_weights_with_a_matching_checksum_are_refused_on_resume(tokens, tmp_path, capsys):
    out = tmp_path / "run"
    final = _finished_run(tokens, out, capsys)
    weights = load_file(final / "model.safetensors")
    weights["norm.weight"][0] = float("nan")
    save_file(weights, final / "model.safetensors", metadata={"format": "pt"})
    meta = json.loads((final / "meta.json").read_text())
    meta["files"]["model.safetensors"] = hashlib.sha256(
        (final / "model.safetensors").read_bytes()
    ).hexdigest()
    (final / "meta.json").write_text(json.dumps(meta))
    before = _hashes(out / "checkpoints")
    args = [*_base(tokens, out, steps=8), "--resume"]
    _assert_user_error(args, capsys, "'norm.weight' contains NaN or inf")
    assert _hashes(out / "checkpoints") == before
    _assert_user_error(["export", final, tmp_path / "hf"], capsys, "'norm.weight' contains NaN")


def test_a_second_train_of_the_same_run_folder_is_refused(tokens, tmp_path, capsys):
    """Two `bloomforge train out=D` at once used to both exit 0 and leave D mixed."""
    from bloomforge.outputs import output_lock

    out = tmp_path / "run"
    final = _finished_run(tokens, out, capsys)
    before = _hashes(out)
    with output_lock(out):  # another writer holds the run folder
        _assert_user_error([*_base(tokens, out, steps=8), "--resume"], capsys, "being written by")
    assert _hashes(out) == before
    assert main([*_base(tokens, out, steps=8), "--resume"]) == 0  # released: it goes on
    assert (final.parent / "step_00000008").is_dir()


def test_train_into_a_folder_of_other_things_is_refused(tokens, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    _assert_user_error(_base(tokens, out), capsys, "not empty")
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
