"""Learning-rate schedules, Megatron's batch rampup and skip ranges against hand-computed values."""

from __future__ import annotations

import math

import pytest

from bloomforge.errors import BloomforgeError
from bloomforge.training.schedule import BatchRampup, learning_rate, parse_skip_ranges

KW = {"lr": 6e-5, "min_lr": 6e-6, "warmup_tokens": 1000, "decay_tokens": 11000}


def test_warmup_then_cosine_to_min_lr():
    assert learning_rate(0, **KW) == 0.0
    assert learning_rate(500, **KW) == pytest.approx(3e-5)
    assert learning_rate(1000, **KW) == pytest.approx(6e-5)
    # halfway through the decay: cos(pi/2) = 0 -> exactly between lr and min_lr
    assert learning_rate(6000, **KW) == pytest.approx((6e-5 + 6e-6) / 2)
    # a quarter: 0.5 * (cos(pi/4) + 1)
    quarter = 6e-6 + 0.5 * (math.cos(math.pi / 4) + 1) * (6e-5 - 6e-6)
    assert learning_rate(3500, **KW) == pytest.approx(quarter)
    assert learning_rate(11000, **KW) == pytest.approx(6e-6)
    assert learning_rate(10**9, **KW) == 6e-6


def test_linear_constant_and_wsd():
    assert learning_rate(6000, schedule="linear", **KW) == pytest.approx(3.3e-5)
    assert learning_rate(6000, schedule="constant", **KW) == 6e-5
    assert learning_rate(10**9, schedule="constant", **KW) == 6e-5
    wsd = {"schedule": "wsd", "wsd_decay_tokens": 2000, **KW}
    assert learning_rate(8999, **wsd) == 6e-5  # stable until the last 2000 tokens
    assert learning_rate(10000, **wsd) == pytest.approx((6e-5 + 6e-6) / 2)
    assert learning_rate(11000, **wsd) == pytest.approx(6e-6)
    # default decay phase: the last 20% of decay_tokens
    assert learning_rate(8800, schedule="wsd", **KW) == 6e-5
    assert learning_rate(9900, schedule="wsd", **KW) == pytest.approx((6e-5 + 6e-6) / 2)


def test_bloom_tr11_rampup_matches_megatron_formula():
    # --rampup-batch-size 192 16 9_765_625, --global-batch-size 2048: 116 increments,
    # 9_765_625 / 116 = 84186.42... samples each; batch = 192 + 16 * int(consumed / 84186.42).
    r = BatchRampup.from_config(2048, 1, 1, [192, 16, 9_765_625])
    per = 9_765_625 / 116
    assert r.batch_size(0) == 192
    assert r.batch_size(84186) == 192
    assert r.batch_size(84187) == 208
    assert r.batch_size(int(per * 58) + 1) == 192 + 16 * 58
    assert r.batch_size(9_765_625) == 2048
    assert r.batch_size(9_765_626) == 2048
    for consumed in range(0, 10_000_000, 99_991):
        expected = 2048 if consumed > 9_765_625 else 192 + 16 * int(consumed / per)
        assert r.batch_size(consumed) == expected
    # micro-batches per step: batch / (micro * dp)
    r8 = BatchRampup.from_config(2048, 2, 8, [192, 16, 9_765_625])
    assert r8.num_micro_batches(0) == 12
    assert r8.num_micro_batches(10**8) == 128


def test_rampup_and_batch_errors_name_the_key():
    with pytest.raises(BloomforgeError, match="global_batch_size 100 is not divisible"):
        BatchRampup.from_config(100, 8, 1, None)
    with pytest.raises(BloomforgeError, match="not a multiple of the increment"):
        BatchRampup.from_config(2048, 1, 1, [190, 16, 1000])
    with pytest.raises(BloomforgeError, match="rampup_batch_size: expected"):
        BatchRampup.from_config(2048, 1, 1, [192, 16])


def test_skip_ranges():
    assert parse_skip_ranges(["100-200", "7-7"]) == [(100, 200), (7, 7)]
    with pytest.raises(BloomforgeError, match="'abc' is not START-END"):
        parse_skip_ranges(["abc"])
    with pytest.raises(BloomforgeError, match="1 <= START <= END"):
        parse_skip_ranges(["5-3"])
