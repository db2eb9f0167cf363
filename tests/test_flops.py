"""Parameter and FLOP counts against published numbers and a hand count."""

from __future__ import annotations

import pytest

from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.flops import (
    count_params,
    forward_flops_per_token,
    megatron_flops_per_iteration,
    train_flops_per_iteration,
    train_flops_per_token,
)

# Parameter counts of the released checkpoints (Hugging Face model cards / BLOOM paper).
PUBLISHED = {
    "bloom-560m": 559_214_592,
    "bloom-1b1": 1_065_314_304,
    "bloom-1b7": 1_722_408_960,
    "bloom-3b": 3_002_557_440,
    "bloom-7b1": 7_069_016_064,
    "bloom-176b": 176_247_271_424,
}


@pytest.mark.parametrize(("name", "expected"), PUBLISHED.items())
def test_preset_params_match_released_models(name, expected):
    assert count_params(ModelConfig.from_name(name)).total == expected


def test_176b_is_176_2_to_176_3_billion():
    assert 176.2e9 <= count_params(ModelConfig.from_name("bloom-176b")).total <= 176.3e9


def test_count_matches_numel_for_every_preset_shape_family():
    for cfg in (ModelConfig.from_name("micro"), ModelConfig.from_name("tiny-6h")):
        model = BloomLM.build(cfg)
        assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total


def test_hand_count_small_config():
    # h=4, f=16, l=1, V=8, s=2, GeLU. Forward matmuls per token:
    #   QKV 2*4*12 = 96, out 2*4*4 = 32, MLP 2*4*16 + 2*16*4 = 256,
    #   QK^T 2*s*h = 16 and attn*V 2*s*h = 16, logits 2*4*8 = 64  -> 480.
    cfg = ModelConfig(n_layer=1, hidden=4, n_head=2, vocab_size=8, pad_vocab_multiple=8)
    assert forward_flops_per_token(cfg, seq_len=2) == 480
    # training: 3 x (416 layer + 64 logits); with recompute the layers go 4x: 4*416 + 3*64
    assert train_flops_per_token(cfg, 2) == 3 * 480
    assert train_flops_per_token(cfg, 2, recompute=True) == 4 * 416 + 3 * 64
    # GLU MLP (3 matrices of h x f): 2*3*4*16 = 384 instead of 256
    glu = ModelConfig(
        n_layer=1, hidden=4, n_head=2, vocab_size=8, pad_vocab_multiple=8, mlp="swiglu"
    )
    assert forward_flops_per_token(glu, seq_len=2) == 480 + 128


@pytest.mark.parametrize("name", ["bloom-560m", "bloom-176b"])
def test_recompute_count_is_megatrons_formula(name):
    cfg = ModelConfig.from_name(name)
    ours = train_flops_per_iteration(cfg, batch_size=8, seq_len=2048, recompute=True)
    assert ours == pytest.approx(megatron_flops_per_iteration(cfg, 8, 2048), rel=1e-12)


def test_glu_coefficient_is_32():
    gelu = ModelConfig(n_layer=1, hidden=64, n_head=4, vocab_size=128)
    glu = ModelConfig(n_layer=1, hidden=64, n_head=4, vocab_size=128, mlp="geglu")
    # the layer term without attention (s -> 0) and logits: 24 h^2 vs 32 h^2
    layer = lambda c: forward_flops_per_token(c, 0) - 2 * 64 * 128  # noqa: E731
    assert layer(gelu) == 24 * 64 * 64
    assert layer(glu) == 32 * 64 * 64
