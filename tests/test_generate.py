"""Generation: cache == no cache, batching == single prompts, sampling knobs, stop strings."""

from __future__ import annotations

import pytest
import torch

from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.generate import Sampling, generate, generate_text, next_token
from bloomforge.tokenizer import byte_level_tokenizer
from helpers import left_padded, tiny_hf_bloom, to_bloomforge


@pytest.fixture(scope="module")
def model():
    return to_bloomforge(tiny_hf_bloom(n_head=6, hidden=48))


SAMPLINGS = [
    Sampling(max_new_tokens=12),
    Sampling(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=7),
    Sampling(max_new_tokens=12, temperature=1.3, top_k=20, seed=3),
]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_cache_equals_no_cache(model, sampling):
    ids, mask = left_padded(3, 8, 256, [0, 2, 5], seed=2)
    with_cache = generate(model, ids, mask, sampling)
    without = generate(model, ids, mask, sampling, use_cache=False)
    assert torch.equal(with_cache, without)


@pytest.mark.parametrize("position", ["rotary", "learned"])
def test_cache_equals_no_cache_other_positions(position):
    cfg = ModelConfig(
        n_layer=2, hidden=32, n_head=4, vocab_size=64, position=position, init_std=0.3
    )
    m = BloomLM.build(cfg, seed=0).eval()
    ids, mask = left_padded(2, 6, 64, [0, 3])
    s = Sampling(max_new_tokens=10)
    assert torch.equal(generate(m, ids, mask, s), generate(m, ids, mask, s, use_cache=False))


def test_batched_left_padding_equals_one_by_one(model):
    ids, mask = left_padded(3, 8, 256, [0, 2, 5], seed=2)
    batched = generate(model, ids, mask, Sampling(max_new_tokens=10))
    for row, pad in enumerate([0, 2, 5]):
        alone = generate(model, ids[row : row + 1, pad:], None, Sampling(max_new_tokens=10))
        assert torch.equal(batched[row, 8:], alone[0, 8 - pad :])


def test_seed_reproduces_and_differs():
    logits = torch.randn(4, 50)
    s = Sampling(temperature=1.0, seed=0)
    draw = lambda seed: next_token(logits, s, torch.Generator().manual_seed(seed), None)  # noqa: E731
    assert torch.equal(draw(1), draw(1))
    assert any(not torch.equal(draw(1), draw(k)) for k in range(2, 6))


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = torch.randn(8, 50)
    greedy = logits.argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(next_token(logits, Sampling(temperature=1.0, top_k=1), g, None), greedy)
    assert torch.equal(next_token(logits, Sampling(temperature=1.0, top_p=1e-6), g, None), greedy)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.8 keeps exactly the first two
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(2000, 4).clone()
    g = torch.Generator().manual_seed(0)
    picks = next_token(logits, Sampling(temperature=1.0, top_p=0.8), g, None)
    assert set(picks.tolist()) == {0, 1}
    assert abs((picks == 0).float().mean().item() - 0.5 / 0.8) < 0.04


def test_vocab_limit_never_emits_padding_rows():
    logits = torch.zeros(3, 10)
    logits[:, 8:] = 100.0  # the padded embedding rows
    assert (next_token(logits, Sampling(), None, vocab_limit=8) < 8).all()


def test_generate_text_stop_strings_and_eos():
    tok = byte_level_tokenizer()
    cfg = ModelConfig(n_layer=1, hidden=32, n_head=4, vocab_size=tok.get_vocab_size(), init_std=0.5)
    m = BloomLM.build(cfg, seed=0).eval()
    prompts = ["Le chat", "日本"]
    free = generate_text(m, tok, prompts, Sampling(max_new_tokens=12))
    assert all(len(t) > 0 for t in free)
    stop = free[0][2:4]  # a string the greedy continuation is known to contain
    cut = generate_text(m, tok, prompts, Sampling(max_new_tokens=12, stop=[stop]))
    assert cut[0] == free[0][: free[0].find(stop)]
    assert stop not in cut[1] and free[1].startswith(cut[1])
