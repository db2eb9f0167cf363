"""Shared fixtures: tiny random transformers BLOOM models and their bloomforge twins."""

from __future__ import annotations

import pytest
import torch

from bloomforge.checkpoint import load_state
from bloomforge.interop.hf import hf_config_to_model, hf_to_bloomforge
from bloomforge.model import BloomLM

transformers = pytest.importorskip("transformers")


def tiny_hf_bloom(
    n_head: int = 8, hidden: int = 64, n_layer: int = 2, vocab: int = 256, seed: int = 0
):
    """A random BloomForCausalLM; a wide init so greedy decoding does not just repeat a token."""
    torch.manual_seed(seed)
    cfg = transformers.BloomConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        n_layer=n_layer,
        n_head=n_head,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    model = transformers.BloomForCausalLM(cfg).eval()
    with torch.no_grad():  # random LayerNorms and biases, so their mapping is checked too
        for name, p in model.named_parameters():
            if "layernorm" in name or "ln_f" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith(("dense.weight", "dense_4h_to_h.weight")):
                p.mul_(3.0)  # blocks outweigh the tied embedding: less self-repetition
    return model


def to_bloomforge(hf_model) -> BloomLM:
    cfg = hf_config_to_model(hf_model.config.to_dict(), "test")
    with torch.device("meta"):
        model = BloomLM(cfg)
    load_state(model, hf_to_bloomforge(hf_model.state_dict(), "test"), "test")
    return model.eval()


def left_padded(batch: int, length: int, vocab: int, pads: list[int], seed: int = 0):
    """Random ids (B, T) with `pads[b]` left pad positions (id 3) and the matching mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for b, n in enumerate(pads):
        mask[b, :n] = 0
        ids[b, :n] = 3
    return ids, mask
