"""Attention paths agree with each other and with hand-built masks; ALiBi slopes as published."""

from __future__ import annotations

import math

import pytest
import torch

from bloomforge.model.attention import (
    AttentionContext,
    MaskSpec,
    alibi_slopes,
    attend,
    reference_attention,
)


def test_alibi_slopes_power_of_two():
    # Press et al. 2022: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0**-i for i in range(1, 9)]))


def test_alibi_slopes_not_power_of_two():
    # 12 heads: the 8-head slopes, then the odd-indexed ones of the 16-head sequence (2^-0.5k).
    expected = [2.0**-i for i in range(1, 9)] + [2.0 ** (-0.5 * k) for k in (1, 3, 5, 7)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(expected))


def _spec(kind: str, B: int, Tq: int, Tk: int) -> MaskSpec:
    g = torch.Generator().manual_seed(0)
    pos = torch.arange(Tk)[None].expand(B, Tk)
    spec = MaskSpec(Tq, Tk, pos[:, Tk - Tq :], pos)
    if kind == "padding":
        valid = torch.ones(B, Tk, dtype=torch.bool)
        valid[1, :5] = False
        k_pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
        spec = MaskSpec(Tq, Tk, k_pos[:, Tk - Tq :], k_pos, key_valid=valid)
    elif kind == "prefix":
        spec.prefix_len = torch.tensor([4, 9])
    elif kind == "documents":
        spec.doc_ids = torch.randint(0, 3, (B, Tk), generator=g).sort(dim=-1).values
    return spec


def _hand_mask(kind: str, spec: MaskSpec) -> torch.Tensor:
    """The same rule written out with loops."""
    B = spec.k_pos.shape[0]
    out = torch.zeros(B, 1, spec.q_len, spec.k_len, dtype=torch.bool)
    for b in range(B):
        for i in range(spec.q_len):
            qa = i + spec.offset
            for j in range(spec.k_len):
                ok = j <= qa
                if kind == "prefix":
                    ok = ok or j < int(spec.prefix_len[b])
                if kind == "documents":
                    ok = ok and bool(spec.doc_ids[b, qa] == spec.doc_ids[b, j])
                if kind == "padding":
                    ok = ok and bool(spec.key_valid[b, j])
                out[b, 0, i, j] = ok or j == qa
    return out


KINDS = ["causal", "padding", "prefix", "documents"]


@pytest.mark.parametrize("kind", KINDS)
def test_mask_rules_match_hand_written(kind):
    spec = _spec(kind, 2, 12, 12)
    assert torch.equal(spec.allowed().expand(2, 1, 12, 12), _hand_mask(kind, spec))


# (kind, Tq, Tk): Tq < Tk is decoding with a KV cache; documents only occur in packed training.
CASES = [(kind, 16, 16) for kind in KINDS] + [(k, 3, 16) for k in KINDS if k != "documents"]


@pytest.mark.parametrize(("kind", "Tq", "Tk"), CASES)
@pytest.mark.parametrize("alibi", [True, False])
@pytest.mark.parametrize("impl", ["sdpa", "flex"])
def test_fast_paths_equal_reference(kind, Tq, Tk, alibi, impl):
    torch.manual_seed(0)
    B, H, D = 2, 4, 8
    q, k, v = torch.randn(B, H, Tq, D), torch.randn(B, H, Tk, D), torch.randn(B, H, Tk, D)
    spec = _spec(kind, B, Tq, Tk)
    slopes = alibi_slopes(H) if alibi else None
    ref = attend(q, k, v, AttentionContext(spec, "reference", slopes, q.dtype), training=False)
    fast = attend(q, k, v, AttentionContext(spec, impl, slopes, q.dtype), training=False)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


def test_reference_is_softmax_of_biased_scores():
    """A float64 hand computation of one ALiBi causal row."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 4, dtype=torch.float64) for _ in range(3))
    spec = _spec("causal", 1, 5, 5)
    ctx = AttentionContext(spec, "reference", alibi_slopes(2).double(), torch.float64)
    out = attend(q, k, v, ctx, training=False)
    h, i = 1, 3
    slope = alibi_slopes(2)[h].item()
    scores = [
        (q[0, h, i] @ k[0, h, j]).item() / math.sqrt(4) - slope * (i - j) for j in range(i + 1)
    ]
    weights = torch.tensor(scores).softmax(0).double()
    expected = (weights[:, None] * v[0, h, : i + 1]).sum(0)
    torch.testing.assert_close(out[0, h, i], expected)
    assert torch.allclose(reference_attention(q, k, v, ctx.attn_mask), out)
