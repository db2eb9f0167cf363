"""The fp16 loss scaler against scale sequences worked out by hand from DeepSpeed's
DynamicLossScaler / Megatron's DynamicGradScaler rules, and against both rules written out
independently (DeepSpeed's iteration counters, Megatron's trackers)."""

from __future__ import annotations

import io
import itertools
import math
import random

import pytest
import torch
import torch.distributed as dist
from torch import nn

from bloomforge.training.loss_scale import LossScaleAtMinimumError, LossScaler
from distributed import run_distributed_test

O, C = True, False  # overflow / clean step


def run(scaler: LossScaler, flags: list[bool]) -> list[float]:
    """The scale after each `update`."""
    out = []
    for found_inf in flags:
        scaler.update(found_inf)
        out.append(scaler.scale)
    return out


def test_defaults_are_the_bloom_small_models_deepspeed_fp16_block():
    # tr11*-ml.slurm: initial_scale_power 12, loss_scale_window 500, hysteresis 2, min 1.
    s = LossScaler()
    assert (s.scale, s.window, s.hysteresis, s.min_scale) == (4096.0, 500, 2, 1.0)
    assert (s.growth_factor, s.backoff_factor, s.dynamic) == (2.0, 0.5, True)
    # The scale doubles on the 500th clean step, not the 499th.
    assert run(s, [C] * 499) == [4096.0] * 499
    assert run(s, [C]) == [8192.0]


def test_hysteresis_two_first_overflow_keeps_scale_second_halves():
    s = LossScaler(initial_scale=1024, window=4, hysteresis=2)
    flags = [O, O, O, C, C, O, C, C, C, C, O, O]
    # O: tolerated (tracker 2 -> 1); O: 512; O: 256 (tracker stays spent); C C: clean steps do
    # not refill it, so O: 128; four clean steps: 256 and the tracker is refilled; O: tolerated;
    # O: 128.
    assert run(s, flags) == [1024, 512, 256, 256, 256, 128, 128, 128, 128, 256, 256, 128]


def test_window_doubles_after_n_clean_steps_and_restarts_at_an_overflow():
    s = LossScaler(initial_scale=8, window=3, hysteresis=1)
    flags = [C, C, C, C, C, C, C, C, O, C, C, C]
    assert run(s, flags) == [8, 8, 16, 16, 16, 32, 32, 32, 16, 16, 16, 32]


def test_min_scale_is_a_floor():
    s = LossScaler(initial_scale=6, min_scale=1, window=100, hysteresis=1)
    assert run(s, [O] * 5) == [3, 1.5, 1, 1, 1]  # 0.75 is clamped to 1
    s = LossScaler(initial_scale=6, min_scale=2, window=100, hysteresis=1)
    assert run(s, [O] * 3) == [3, 2, 2]


def test_raise_at_min_scale_stops_like_deepspeed():
    s = LossScaler(initial_scale=4, min_scale=1, window=100, hysteresis=1, raise_at_min_scale=True)
    assert run(s, [O, O]) == [2, 1]  # reaching the floor is fine
    with pytest.raises(LossScaleAtMinimumError, match="minimum loss scale"):
        s.update(True)


def test_consecutive_hysteresis_refills_on_any_clean_step():
    flags = [O, C, O, O, O, C, O, O]
    s = LossScaler(initial_scale=64, window=100, hysteresis=2, consecutive_hysteresis=True)
    assert run(s, flags) == [64, 64, 64, 32, 16, 16, 16, 8]
    s = LossScaler(initial_scale=64, window=100, hysteresis=2)  # BLOOM's: no refill
    assert run(s, flags) == [64, 64, 32, 16, 8, 8, 4, 2]


def test_static_scale_never_changes():
    s = LossScaler(static_scale=128.0)
    assert not s.dynamic
    assert run(s, [O, O, O, C] * 3) == [128.0] * 12
    assert s.scale_loss(torch.tensor(0.5)).item() == 64.0


def deepspeed_rule(flags, init, window, delayed_shift, min_scale):
    """DeepSpeed's formulation: iteration counters, growth when (iter - last overflow) is a
    multiple of the window, a hysteresis counter that stops at 1."""
    scale, last_overflow, hyst, out = init, -1, delayed_shift, []
    for cur_iter, overflow in enumerate(flags):
        if overflow:
            if delayed_shift == 1 or hyst == 1:
                scale = max(scale / 2, min_scale)
            else:
                hyst -= 1
            last_overflow = cur_iter
        elif (cur_iter - last_overflow) % window == 0:
            hyst = delayed_shift
            scale *= 2
        out.append(scale)
    return out


def megatron_rule(flags, init, window, hysteresis, min_scale):
    """Megatron's formulation: a growth tracker reset on growth, a hysteresis tracker that
    keeps counting down past zero."""
    scale, growth, hyst, out = init, 0, hysteresis, []
    for overflow in flags:
        if overflow:
            growth = 0
            hyst -= 1
            if hyst <= 0:
                scale = max(scale * 0.5, min_scale)
        else:
            growth += 1
            if growth == window:
                growth, hyst = 0, hysteresis
                scale *= 2
        out.append(scale)
    return out


@pytest.mark.parametrize("window,hysteresis", [(1, 1), (5, 1), (5, 3), (7, 2)])
def test_matches_deepspeed_and_megatron_rules_on_random_sequences(window, hysteresis):
    rng = random.Random(window * 10 + hysteresis)
    # A burst of overflows first, so the floor is reached, then a random mix.
    flags = [O] * 40 + [rng.random() < 0.3 for _ in range(3000)]
    args = (2.0**8, window, hysteresis, 2.0**-2)
    ours = run(LossScaler(initial_scale=2.0**8, window=window, hysteresis=hysteresis,
                          min_scale=2.0**-2), flags)  # fmt: skip
    assert ours == deepspeed_rule(flags, *args)
    assert ours == megatron_rule(flags, *args)
    assert min(ours) == 2.0**-2  # the floor was reached
    assert any(b > a for a, b in itertools.pairwise(ours))  # and growth happened


def test_state_dict_round_trip_continues_the_sequence():
    kwargs = {"initial_scale": 16, "window": 3, "hysteresis": 2}
    a = LossScaler(**kwargs)
    # Mid-sequence: one overflow tolerated (tracker spent to 1), one clean step counted.
    assert run(a, [C, O, C]) == [16, 16, 16]
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = LossScaler(**kwargs)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert (
        b.state_dict()
        == a.state_dict()
        == {
            "scale": 16.0,
            "growth_tracker": 1,
            "hysteresis_tracker": 1,
        }
    )
    rest = [C, C, O, O, C, C, C, O]
    # Two more clean steps fill the window (32, tracker refilled); O tolerated; O: 16; three
    # clean steps: 32; O tolerated. A fresh scaler would grow one step later.
    expected = [16, 32, 32, 16, 16, 16, 32, 32]
    assert run(b, rest) == expected
    assert run(a, rest) == expected
    assert run(LossScaler(**kwargs), rest) != expected


def test_load_state_dict_accepts_megatron_state_and_names_missing_keys():
    s = LossScaler(initial_scale=1024, hysteresis=2)
    # Megatron keeps the scale as a tensor and its hysteresis tracker below 1 after a backoff:
    # the next overflow backs off at once.
    s.load_state_dict({"scale": torch.tensor([8.0]), "growth_tracker": 0, "hysteresis_tracker": -1})
    assert run(s, [O]) == [4.0]
    with pytest.raises(KeyError, match="hysteresis_tracker"):
        s.load_state_dict({"scale": 1.0, "growth_tracker": 0})
    static = LossScaler(static_scale=64.0)
    static.load_state_dict({"scale": 8.0, "growth_tracker": 0, "hysteresis_tracker": 2})
    assert static.scale == 64.0  # the configured static scale wins


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"window": 0}, "window"),
        ({"hysteresis": 0}, "hysteresis"),
        ({"min_scale": 8192.0}, "min_scale"),
        ({"growth_factor": 1.0}, "growth_factor"),
        ({"backoff_factor": 1.0}, "backoff_factor"),
        ({"static_scale": 0.0}, "static_scale"),
        ({"initial_scale": math.inf}, "initial_scale"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LossScaler(**kwargs)


def test_scale_loss_in_float32():
    s = LossScaler(initial_scale=2.0**16)
    scaled = s.scale_loss(torch.tensor(2.0, dtype=torch.float16))
    assert scaled.dtype == torch.float32  # 2**17 would be inf in fp16
    assert scaled.item() == 2.0**17


def test_unscale_and_check_unscales_in_place():
    s = LossScaler(initial_scale=1024)
    a = torch.full((3,), 1024.0)
    b = torch.tensor([2048.0, -512.0], dtype=torch.float16)
    assert s.unscale_and_check([a, None, b]) is False
    assert a.tolist() == [1.0, 1.0, 1.0]
    assert b.dtype == torch.float16 and b.tolist() == [2.0, -0.5]
    assert s.unscale_and_check([]) is False


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_unscale_and_check_finds_inf_and_nan(bad, dtype):
    s = LossScaler(initial_scale=4)
    grads = [torch.ones(5, dtype=dtype), torch.tensor([4.0, bad, 8.0], dtype=dtype)]
    assert s.unscale_and_check(grads) is True
    assert grads[0].tolist() == [0.25] * 5


def test_unscale_below_one_that_leaves_fp16_range_is_an_overflow():
    s = LossScaler(static_scale=0.5)  # unscaling multiplies by 2
    assert s.unscale_and_check([torch.tensor([40000.0], dtype=torch.float16)]) is True


def test_fp16_backward_overflow_is_detected_and_the_scale_backs_off():
    # A fp16 layer whose weight gradient is 100 * scale: fp16's largest finite value is 65504,
    # so 2**16 (already inf when cast into the fp16 graph) down to 2**10 (102400) overflow and
    # 2**9 (51200) is the first clean step: seven skipped steps, by hand.
    torch.manual_seed(0)
    layer = nn.Linear(4, 1, bias=False).half()
    nn.init.ones_(layer.weight)
    x = torch.full((1, 4), 100.0, dtype=torch.float16)
    s = LossScaler(initial_scale=2.0**16, hysteresis=1)
    tried, found = [], True
    while found:
        layer.zero_grad()
        tried.append(s.scale)
        s.scale_loss(layer(x).float().sum()).backward()
        found = s.unscale_and_check(p.grad for p in layer.parameters())
        s.update(found)
        assert len(tried) < 20
    assert tried == [2.0**k for k in range(16, 8, -1)]
    # The unscaled gradient is the float64 one: d(w . x)/dw = x.
    w64 = torch.ones(1, 4, dtype=torch.float64, requires_grad=True)
    (ref,) = torch.autograd.grad((x.double() @ w64.T).sum(), w64)
    assert torch.equal(layer.weight.grad.double(), ref)


def _dtensor_ranks(rank: int, world_size: int) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world_size,))
    s = LossScaler(initial_scale=4.0)
    g = distribute_tensor(torch.arange(8, dtype=torch.float32) * 4, mesh, [Shard(0)])
    plain = torch.full((2,), 8.0)
    assert s.unscale_and_check([g, plain], group=dist.group.WORLD) is False
    assert torch.equal(g.full_tensor(), torch.arange(8, dtype=torch.float32))
    assert plain.tolist() == [2.0, 2.0]
    # Only rank 1's shard overflows: with the group every rank skips, without it only rank 1.
    h = distribute_tensor(torch.ones(8), mesh, [Shard(0)])
    if rank == 1:
        h.to_local()[0] = math.inf
    assert s.unscale_and_check([h], group=dist.group.WORLD) is True
    assert s.unscale_and_check([h]) is (rank == 1)


def test_unscale_and_check_on_dtensors_agrees_across_ranks():
    run_distributed_test(_dtensor_ranks)
