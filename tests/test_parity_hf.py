"""bloomforge's BLOOM against transformers' BloomForCausalLM: logits, both directions, greedy."""

from __future__ import annotations

import pytest
import torch
from transformers import BloomForCausalLM

from bloomforge.checkpoint import save_checkpoint
from bloomforge.interop import export_hf
from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.generate import Sampling, generate
from bloomforge.recipe import Recipe
from helpers import left_padded, tiny_hf_bloom, to_bloomforge

# n_head 6 covers BLOOM's ALiBi slopes for a head count that is not a power of two.
SHAPES = [(8, 64), (6, 48)]


@pytest.mark.parametrize(("n_head", "hidden"), SHAPES)
@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_imported_logits_match_transformers(n_head, hidden, impl):
    hf = tiny_hf_bloom(n_head=n_head, hidden=hidden)
    ours = to_bloomforge(hf)
    ours.cfg.attn_impl = impl
    ids, _ = left_padded(2, 24, 256, [0, 0])
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n_head", "hidden"), SHAPES)
def test_left_padding_matches_transformers(n_head, hidden):
    hf = tiny_hf_bloom(n_head=n_head, hidden=hidden)
    ours = to_bloomforge(hf)
    ids, mask = left_padded(3, 20, 256, [0, 5, 13])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask)
    real = mask.bool()  # padded positions' logits are meaningless in both
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    # and a padded row equals the same row run alone without padding
    with torch.no_grad():
        alone = ours(ids[2:, 13:])
    torch.testing.assert_close(got[2, 13:], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_head", [8, 6])
def test_exported_model_loads_in_transformers(tmp_path, n_head):
    cfg = ModelConfig(n_layer=2, hidden=8 * n_head, n_head=n_head, vocab_size=300, init_std=0.2)
    ours = BloomLM.build(cfg, seed=3).eval()
    save_checkpoint(tmp_path / "ckpt", ours, Recipe(model=cfg))
    export_hf(tmp_path / "ckpt", tmp_path / "hf")
    hf = BloomForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert hf.config.vocab_size == cfg.padded_vocab_size == 384
    ids, mask = left_padded(2, 16, 300, [0, 4])
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_head", [8, 6])
def test_greedy_generation_matches_transformers(n_head):
    hf = tiny_hf_bloom(n_head=n_head, hidden=8 * n_head)
    ours = to_bloomforge(hf)
    ids, mask = left_padded(3, 9, 256, [0, 3, 6], seed=1)
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=3, eos_token_id=2
    )
    got = generate(ours, ids, mask, Sampling(max_new_tokens=16))
    assert torch.equal(got, expected)
    assert len(set(got[:, 9:].flatten().tolist())) > 5  # not vacuous: the tokens vary
