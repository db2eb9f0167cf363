"""The training engine: loss goes down, exact resume after SIGKILL, skips, stops, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bloomforge.cli import main
from bloomforge.recipe import load_recipe
from bloomforge.training.loop import Trainer
from bloomforge.training.optim import build_optimizer
from token_data import corpus_lines, write_token_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    write_token_folder(
        out, {("ud", "fr"): corpus_lines("fr", 300), ("ud", "en"): corpus_lines("en", 300)}
    )
    return out


def _overrides(tokens: Path, out: Path, **extra) -> list[str]:
    base = {
        "model": "micro",
        "data.tokens": tokens,
        "data.seq_len": 32,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 4,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "train.warmup_tokens": 1000,
        "train.decay_tokens": 3072,
        "train.max_tokens": 3072,  # 12 steps of 8 x 32 tokens
        "train.precision": "fp32",
        "train.save_every": 4,
        "train.keep_last": 5,
        "train.log_every": 1,
        "out": out,
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def _train(tokens, out, resume=False, **extra):
    recipe = load_recipe(None, _overrides(tokens, out, **extra))
    return Trainer(recipe, resume=resume).fit()


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]


def _weights(run: Path, step: int = 12) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


@pytest.fixture(scope="module")
def reference(tokens, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    _train(tokens, run)
    return run


def test_loss_goes_down_on_real_text(tokens, tmp_path):
    summary = _train(
        tokens,
        tmp_path / "run",
        **{"train.max_tokens": 40 * 256, "train.decay_tokens": 40 * 256, "train.save_every": 0},
    )
    losses = [loss for _, loss in _losses(tmp_path / "run")]
    assert len(losses) == 40 and summary["skipped"] == 0
    assert losses[0] > 5.0  # ~ln(260) at init
    assert sum(losses[-5:]) / 5 < losses[0] - 1.5


def test_optimizer_groups_do_not_decay_biases_or_norms():
    from bloomforge.model import BloomLM
    from bloomforge.model.config import ModelConfig

    recipe = load_recipe(None, ["model=micro"])
    model = BloomLM.build(ModelConfig.from_name("micro"))
    opt = build_optimizer(model, recipe.train)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    plain = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0
    assert "tok_embeddings.weight" in decayed and "layers.0.attention.qkv.weight" in decayed
    assert "emb_norm.weight" in plain and "layers.0.attention.qkv.bias" in plain
    assert "norm.bias" in plain and not any(n.endswith("bias") for n in decayed)


def _killed_run(tokens, run: Path, fault: str) -> int:
    env = {**os.environ, "BLOOMFORGE_FAULT": fault, "PYTHONPATH": str(REPO / "src")}
    recipe = REPO / "tests" / "data" / "empty_recipe.yaml"  # every value from the overrides
    args = [sys.executable, "-m", "bloomforge", "train", str(recipe), *_overrides(tokens, run)]
    return subprocess.run(args, env=env, capture_output=True, text=True).returncode


@pytest.mark.parametrize(
    "fault",
    [
        "step@6",  # between checkpoints
        "checkpoint-before@8",  # just before a checkpoint write
        "checkpoint-write@8",  # in the middle of one: the folder is not renamed yet
        "checkpoint-after@8",  # just after one
    ],
)
def test_sigkill_then_resume_is_bitwise_identical(tokens, reference, tmp_path, fault):
    run = tmp_path / "run"
    assert _killed_run(tokens, run, fault) == -9  # really killed
    _train(tokens, run, resume=True)
    ref, got = _weights(reference), _weights(run)
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    assert _losses(run) == _losses(reference)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tokens, reference, tmp_path):
    run = tmp_path / "run"
    assert _killed_run(tokens, run, "step@10") == -9  # checkpoints at 4 and 8
    weights = run / "checkpoints" / "step_00000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.warns(UserWarning, match="step_00000008.*checksum mismatch"):
        _train(tokens, run, resume=True)
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(run)[name]), name
    assert _losses(run) == _losses(reference)


def test_nan_batch_is_skipped_and_the_run_goes_on(tokens, tmp_path):
    recipe = load_recipe(None, _overrides(tokens, tmp_path / "run"))
    trainer = Trainer(recipe)
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 5 else output  # 3rd step, 1st micro

    trainer.model.tok_embeddings.register_forward_hook(poison)
    summary = trainer.fit()
    assert summary["step"] == 12 and summary["skipped"] == 1
    assert summary["skip_reasons"] == {"non-finite loss or gradient": 1}
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skip_reason")] == [3]


def test_skip_range_consumes_data_without_updating(tokens, tmp_path):
    recipe = load_recipe(None, _overrides(tokens, tmp_path / "run", **{"train.max_tokens": 768}))
    recipe.train.skip_ranges = ["2-3"]
    trainer = Trainer(recipe)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train_step()
    after_1 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert any(not torch.equal(before[n], after_1[n]) for n in before)
    trainer.train_step()
    trainer.train_step()
    assert all(torch.equal(after_1[n], p) for n, p in trainer.model.named_parameters())
    assert trainer.skipped == 2 and trainer.loader.consumed_samples == 24
    assert trainer.skip_reasons == {"train.skip_ranges": 2}


def test_spike_guard_against_running_median(tokens, tmp_path):
    recipe = load_recipe(None, _overrides(tokens, tmp_path / "run"))
    recipe.train.spike_factor = 5.0
    trainer = Trainer(recipe)
    assert trainer._guard(1.0, 100.0) is None  # no history yet
    trainer.norms.extend([1.0, 2.0, 3.0] * 4)  # median 2
    assert trainer._guard(1.0, 10.0) is None
    assert trainer._guard(1.0, 10.1).startswith("grad norm spike")
    assert trainer._guard(float("nan"), 1.0) == "non-finite loss or gradient"


def test_kill_switch_saves_and_stops_then_resume_finishes(tokens, reference, tmp_path):
    switch = tmp_path / "STOP"
    switch.touch()
    run = tmp_path / "run"
    summary = _train(tokens, run, **{"train.kill_switch": switch})
    assert summary["step"] == 1 and summary["stopped"].startswith("kill switch")
    assert (run / "checkpoints" / "step_00000001").is_dir()
    switch.unlink()
    _train(tokens, run, resume=True, **{"train.kill_switch": switch})
    for name, tensor in _weights(reference).items():
        assert torch.equal(tensor, _weights(run)[name]), name


def test_tensorboard_and_validation_are_written(reference):
    assert any((reference / "tb").iterdir())
    rows = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["kind"] == "valid"]
    assert valid and valid[-1]["ud/loss"] > 0 and valid[-1]["step"] == 12
    train = [r for r in rows if r["kind"] == "train"]
    assert {"loss", "lr", "grad_norm", "batch_size", "tokens_per_s", "tflops"} <= set(train[0])


def test_cli_dry_run_and_errors(tokens, tmp_path, capsys):
    assert main(["train", str(REPO / "recipes" / "tiny.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "steps" in out and "batch schedule" in out
    assert main(["train", str(REPO / "recipes" / "tiny.yaml"), f"out={tmp_path}/r"]) == 2
    assert "data.tokens is not set" in capsys.readouterr().err
    run = tmp_path / "run"
    _train(tokens, run, **{"train.max_tokens": 256})
    assert main(["train", str(run / "config.yaml")]) == 2
    assert "already has checkpoints; pass --resume" in capsys.readouterr().err


def _one_step_weights(tokens, out, **extra) -> dict[str, torch.Tensor]:
    recipe = load_recipe(None, _overrides(tokens, out, **extra))
    trainer = Trainer(recipe)
    metrics = trainer.train_step()
    assert metrics["loss"] is not None and metrics["loss"] == metrics["loss"]
    return {n: p.detach().clone() for n, p in trainer.model.state_dict().items()}


def test_activation_checkpointing_keeps_names_and_results(tokens, tmp_path):
    plain = _one_step_weights(tokens, tmp_path / "a")
    ac = _one_step_weights(tokens, tmp_path / "b", **{"train.activation_checkpointing": True})
    assert plain.keys() == ac.keys()  # checkpoint names unchanged by the wrapper
    for name in plain:
        torch.testing.assert_close(ac[name], plain[name], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_step_tracks_fp32(tokens, tmp_path):
    fp32 = load_recipe(None, _overrides(tokens, tmp_path / "a"))
    bf16 = load_recipe(None, _overrides(tokens, tmp_path / "b", **{"train.precision": "bf16"}))
    a, b = Trainer(fp32).train_step(), Trainer(bf16).train_step()
    assert abs(a["loss"] - b["loss"]) / a["loss"] < 1e-2  # same init and batch, bf16 matmuls
    for p in Trainer(bf16).model.parameters():
        assert p.dtype == torch.float32  # master weights stay fp32


def test_compiled_blocks_match_eager(tokens, tmp_path):
    """`train.compile` compiles each block in place (torch.compile, inductor on CPU)."""
    eager = load_recipe(None, _overrides(tokens, tmp_path / "a"))
    compiled = load_recipe(None, _overrides(tokens, tmp_path / "b", **{"train.compile": True}))
    a, b = Trainer(eager), Trainer(compiled)
    for _ in range(2):
        la, lb = a.train_step()["loss"], b.train_step()["loss"]
        assert abs(la - lb) / la < 1e-5
    assert a.model.state_dict().keys() == b.model.state_dict().keys()


def test_codecarbon_measures_the_run(tokens, tmp_path, capsys):
    pytest.importorskip("codecarbon")
    summary = _train(tokens, tmp_path / "run", **{"train.max_tokens": 512})
    assert summary["emissions_kg"] is not None and summary["emissions_kg"] > 0
    header = (tmp_path / "run" / "emissions.csv").read_text().splitlines()[0]
    assert "energy_consumed" in header and "country_iso_code" in header
    assert "measured by codecarbon" in capsys.readouterr().out
