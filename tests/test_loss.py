"""The fused, chunked output projection + cross-entropy equals logits + F.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.loss import fused_linear_cross_entropy, next_token_targets


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_matches_unfused_loss_and_gradients(chunk):
    torch.manual_seed(0)
    h = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 40, (50,))
    t[[3, 17, 49]] = -100
    ref = F.cross_entropy(h @ w.t(), t, ignore_index=-100)
    ref.backward(torch.tensor(2.5, dtype=torch.float64))
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    got = fused_linear_cross_entropy(h, w, t, chunk_size=chunk)
    got.backward(torch.tensor(2.5, dtype=torch.float64))
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(h.grad, gh)
    torch.testing.assert_close(w.grad, gw)


def test_model_loss_through_the_tied_embedding():
    model = BloomLM.build(ModelConfig(n_layer=2, hidden=32, n_head=4, vocab_size=100), seed=0)
    ids = torch.randint(0, 100, (3, 12))
    targets = next_token_targets(ids)
    assert torch.equal(targets[:, :-1], ids[:, 1:]) and (targets[:, -1] == -100).all()
    ref = F.cross_entropy(model(ids).flatten(0, 1), targets.flatten())
    ref.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = fused_linear_cross_entropy(model(ids, return_hidden=True), model.output_weight, targets)
    got.backward()
    torch.testing.assert_close(got, ref)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_no_grad_and_all_ignored():
    h, w = torch.randn(5, 4), torch.randn(6, 4)
    with torch.no_grad():
        assert fused_linear_cross_entropy(h, w, torch.full((5,), -100)).item() == 0.0
