"""Every variant runs forward and backward, masks mean what they say, init is BLOOM's."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.flops import count_params

VARIANTS = list(
    itertools.product(
        ["alibi", "none", "learned", "sinusoidal", "rotary"],
        ["gelu", "swiglu", "geglu", "reglu"],
        [True, False],
        ["causal", "prefix_lm"],
    )
)


def _cfg(**kw) -> ModelConfig:
    base = dict(n_layer=2, hidden=32, n_head=4, vocab_size=100, max_seq_len=32)
    return ModelConfig(**(base | kw))


@pytest.mark.parametrize(("position", "mlp", "emb_ln", "attention"), VARIANTS)
def test_variant_forward_backward(position, mlp, emb_ln, attention):
    cfg = _cfg(position=position, mlp=mlp, embedding_layernorm=emb_ln, attention=attention)
    model = BloomLM.build(cfg, seed=0)
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg).total
    ids = torch.randint(0, 100, (2, 16))
    prefix = torch.tensor([5, 0]) if attention == "prefix_lm" else None
    logits = model(ids, prefix_len=prefix)
    assert logits.shape == (2, 16, cfg.padded_vocab_size)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.tok_embeddings.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("position", ["alibi", "learned", "rotary", "sinusoidal", "none"])
def test_causal_outputs_ignore_the_future(position):
    model = BloomLM.build(_cfg(position=position), seed=0).eval()
    ids = torch.randint(0, 100, (1, 12))
    changed = ids.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 100
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_prefix_lm_prefix_sees_whole_prefix_but_not_the_target():
    model = BloomLM.build(_cfg(attention="prefix_lm"), seed=0).eval()
    ids = torch.randint(0, 100, (1, 12))
    prefix = torch.tensor([6])
    with torch.no_grad():
        base = model(ids, prefix_len=prefix)
        in_prefix = ids.clone()
        in_prefix[0, 5] = (in_prefix[0, 5] + 1) % 100
        after = ids.clone()
        after[0, 9] = (after[0, 9] + 1) % 100
        a, b = model(in_prefix, prefix_len=prefix), model(after, prefix_len=prefix)
    assert not torch.allclose(a[0, 0], base[0, 0])  # position 0 sees token 5 (bidirectional)
    torch.testing.assert_close(b[0, :9], base[0, :9])  # nobody before 9 sees token 9


def test_prefix_len_zero_is_causal():
    cfg = _cfg(attention="prefix_lm")
    model = BloomLM.build(cfg, seed=0).eval()
    causal = BloomLM.build(_cfg(), seed=0).eval()
    causal.load_state_dict(model.state_dict())
    ids = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, prefix_len=torch.zeros(2, dtype=torch.long)), causal(ids)
        )


def test_packed_documents_equal_separate_runs():
    """With ALiBi (relative) and a document mask, a packed row equals each document alone."""
    model = BloomLM.build(_cfg(), seed=0).eval()
    ids = torch.randint(0, 100, (1, 14))
    docs = torch.tensor([[0] * 5 + [1] * 9])
    with torch.no_grad():
        packed = model(ids, doc_ids=docs)
        torch.testing.assert_close(packed[0, :5], model(ids[:, :5])[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed[0, 5:], model(ids[:, 5:])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "flex"])
@pytest.mark.parametrize("position", ["alibi", "rotary"])
def test_model_attention_impls_agree(impl, position):
    cfg = _cfg(position=position, attention="prefix_lm")
    model = BloomLM.build(cfg, seed=0).eval()
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    prefix = torch.tensor([3, 8])
    with torch.no_grad():
        sdpa = model(ids, attention_mask=mask, prefix_len=prefix)
        model.cfg.attn_impl = impl
        other = model(ids, attention_mask=mask, prefix_len=prefix)
    real = mask.bool()
    torch.testing.assert_close(other[real], sdpa[real], atol=1e-5, rtol=1e-5)


def test_meta_build_and_bloom_init():
    cfg = ModelConfig(n_layer=6, hidden=384, n_head=6, vocab_size=2000)
    model = BloomLM.build(cfg, seed=0)
    std = math.sqrt(1 / (3 * 384))  # BLOOM tr11: sqrt(1 / (3 h))
    block = model.layers["3"]
    assert list(model.layers.keys()) == [str(i) for i in range(6)]
    assert abs(block.attention.qkv.weight.std().item() - std) / std < 0.02
    out_std = block.mlp.down.weight.std().item()
    assert abs(out_std - std / math.sqrt(12)) / (std / math.sqrt(12)) < 0.02
    assert torch.all(block.attention.qkv.bias == 0) and torch.all(block.attn_norm.weight == 1)
    torch.testing.assert_close(
        model.alibi_slopes,
        torch.tensor([2.0 ** (-8 / 4 * i) for i in (1, 2, 3, 4)] + [2.0**-1, 2.0**-3]),
    )


def test_bf16_keeps_float32_buffers():
    model = BloomLM.build(_cfg(position="rotary"), dtype=torch.bfloat16, seed=0)
    assert model.tok_embeddings.weight.dtype == torch.bfloat16
    assert model.rope_inv_freq.dtype == torch.float32
    out = model(torch.randint(0, 100, (1, 8)))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
