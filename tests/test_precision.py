"""One mixed-precision policy on every layout, and fp16 with dynamic loss scaling.

bf16 / fp16 follow Megatron: low-precision parameters and activations, float32 master weights,
float32 gradient accumulation and reduction. FSDP2's MixedPrecisionPolicy implements it and the
trainer applies it on one process too, so a single-process bf16 run and an FSDP2 dp2 run compute
the same micro-batches the same way (they used to differ: autocast kept a float32 residual
stream on one process). The reference here is the single-process run, as for every layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bloomforge.recipe import load_recipe
from bloomforge.training.loop import Trainer
from distributed import run_distributed_test
from token_data import corpus_lines, write_token_folder


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    write_token_folder(out, {("ud", "fr"): corpus_lines("fr", 200)})
    return out


def _recipe(tokens: Path, out: Path, steps: int, **extra):
    base = {
        "model": "micro",
        "data.tokens": tokens,
        "data.seq_len": 32,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 2,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "train.warmup_tokens": 256,
        "train.decay_tokens": 12 * 256,
        "train.max_tokens": steps * 256,
        "train.save_every": 0,
        "train.log_every": 1,
        "out": out,
        **extra,
    }
    return load_recipe(None, [f"{k}={v}" for k, v in base.items()])


def _train(
    rank: int, world_size: int, tokens: Path, out: Path, steps: int, extra: dict, resume=False
):
    recipe = _recipe(tokens, out, steps, **extra)
    return Trainer(recipe, resume=resume, rank=rank, world_size=world_size).fit()


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "train"]


def _final(run: Path) -> dict[str, torch.Tensor]:
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    return load_file(ckpts[-1] / "model.safetensors")


def test_bf16_single_process_matches_fsdp2_dp2(tokens, tmp_path):
    single, dp2 = tmp_path / "single", tmp_path / "dp2"
    _train(0, 1, tokens, single, 6, {"train.precision": "bf16"})
    run_distributed_test(_train, tokens, dp2, 6, {"train.precision": "bf16"}, world_size=2)
    a, b = [r["loss"] for r in _rows(single)], [r["loss"] for r in _rows(dp2)]
    assert len(a) == len(b) == 6
    # the same bf16 micro-batches; float32 sums in another order only (drift 6e-5 after 6 Adam
    # steps; the old autocast policy differed from step 1 on, by 1.8e-4 at step 3)
    assert a[:2] == pytest.approx(b[:2], rel=1e-6)
    assert a == pytest.approx(b, rel=2e-4)
    wa, wb = _final(single), _final(dp2)
    off = total = 0
    for name in wa:
        assert wa[name].dtype == torch.float32, name  # float32 master weights are what is saved
        if name.endswith("qkv.bias"):
            # the key bias has a true gradient of exactly 0 (softmax ignores a shift shared by a
            # row), so Adam turns rounding noise into lr-sized steps in any layout
            continue
        off += int(((wa[name] - wb[name]).abs() > 1e-4).sum())
        total += wa[name].numel()
    # A bf16 rounding that flips on a float32 difference (bf16's step is 4e-3 near 1.0) moves a
    # weight by up to one lr-sized Adam step: a few dozen weights here. The old policy
    # (autocast on one process) left 1,300 of the first block's QKV weights alone apart.
    assert off < total / 1000, f"{off} of {total} weights differ by more than 1e-4"
    # and bf16 is really in use: the float32 run differs by more than that
    fp32 = tmp_path / "fp32"
    _train(0, 1, tokens, fp32, 6, {"train.precision": "fp32"})
    c = [r["loss"] for r in _rows(fp32)]
    assert max(abs(x - y) / abs(y) for x, y in zip(a, c, strict=True)) > 1e-4


FP16 = {"train.precision": "fp16", "train.initial_scale_power": 24, "train.loss_scale_window": 3}


def test_fp16_overflow_is_skipped_and_the_scale_follows_the_rule(tokens, tmp_path):
    run = tmp_path / "run"
    summary = _train(0, 1, tokens, run, 12, FP16)
    rows = _rows(run)
    scales = [r["loss_scale"] for r in rows]
    over = [bool(r.get("skip_reason", "").startswith("fp16 gradient overflow")) for r in rows]
    assert scales[0] == 2.0**24 and over[0]  # 2^24 x the loss gradient is beyond fp16's range
    # DeepSpeed's DynamicLossScaler as tr11's fp16 runs set it: hysteresis 2, window 3
    expected, scale, hyst, clean = [], 2.0**24, 2, 0
    for o in over:
        expected.append(scale)
        if o:
            clean = 0
            if hyst > 1:
                hyst -= 1
            else:
                scale = max(scale / 2, 1.0)
        else:
            clean += 1
            if clean == 3:
                scale, hyst, clean = scale * 2, 2, 0
    assert scales == expected
    assert 0 < sum(over) < len(over)  # overflows skipped, then real steps
    assert summary["skip_reasons"]["fp16 gradient overflow"] == sum(over)
    done = [r for r, o in zip(rows, over, strict=True) if not o]
    assert all(r["grad_norm"] is not None and r["loss"] == r["loss"] for r in done)
    assert done[-1]["loss"] < rows[0]["loss"]  # it learns once the scale fits
    weights = _final(run)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_fp16_resume_continues_the_scale_and_the_weights_exactly(tokens, tmp_path):
    full, parts = tmp_path / "full", tmp_path / "parts"
    _train(0, 1, tokens, full, 12, FP16)
    _train(0, 1, tokens, parts, 7, FP16)  # stops after step 7: the scaler mid-window
    _train(0, 1, tokens, parts, 12, FP16, resume=True)
    a, b = _rows(full), _rows(parts)
    assert [r["loss_scale"] for r in a] == [r["loss_scale"] for r in b]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa, wb = _final(full), _final(parts)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_fp16_min_and_static_loss_scale(tokens, tmp_path):
    """train.min_loss_scale floors the dynamic scale; train.loss_scale > 0 is a fixed scale."""
    floor = {**FP16, "train.min_loss_scale": 2.0**22, "train.max_consecutive_skips": 0}
    _train(0, 1, tokens, tmp_path / "floor", 6, floor)
    scales = [r["loss_scale"] for r in _rows(tmp_path / "floor")]
    assert scales[-1] == 2.0**22 and min(scales) == 2.0**22  # would reach 2^20 without it
    static = {**FP16, "train.loss_scale": 1024}
    _train(0, 1, tokens, tmp_path / "static", 6, static)
    rows = _rows(tmp_path / "static")
    assert [r["loss_scale"] for r in rows] == [1024.0] * 6
    assert not any(r.get("skip_reason") for r in rows)  # 1024 fits fp16 here
