"""The multitask finetuning objective against its references: each sample alone (float64),
Megatron-DeepSpeed's packing loop and mask rule transcribed here, and hand-computed weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bloomforge.model import BloomLM
from bloomforge.model.attention import MaskSpec
from bloomforge.model.config import ModelConfig
from bloomforge.mtf.loader import PackedRows, _Packing, _Samples, pack_rows
from bloomforge.training.objective import IGNORE, MTFObjective

PAD = 3


def _samples(pairs: list[tuple[list[int], list[int]]]) -> _Samples:
    flat = [np.asarray([*a, *b]) for a, b in pairs]
    starts = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum([len(f) for f in flat], out=starts[1:])
    return _Samples(np.concatenate(flat), starts, np.asarray([len(a) for a, _ in pairs]))


def test_pack_rows_is_megatrons_pack_samples():
    # decoder_packed_mtf_dataset.py's docstring example
    s = _samples([([6, 7], [8]), ([3, 4], [5])])
    rows = pack_rows(s, [np.array([0, 1])], 7, pad_id=0)
    assert rows.tokens.tolist() == [[6, 7, 8, 3, 4, 5, 0]]
    assert rows.segment_ids.tolist() == [[1, 1, 1, 2, 2, 2, 0]]
    assert rows.is_input.int().tolist() == [[1, 1, 0, 1, 1, 0, 0]]


def _megatron_rows(sizes: np.ndarray, seq_length: int, seed: int, epochs: int):
    """decoder_packed_mtf_dataset.py `_build_index_mappings` / `_build_sample_idx`, transcribed."""
    np_rng = np.random.RandomState(seed=seed)
    row_offset = old_sample_start = 0
    shuffle_idx, sample_idx = [], []
    for epoch in range(epochs):
        ids = np.arange(len(sizes), dtype=np.int64)
        np_rng.shuffle(ids)
        shuffle_idx.append(ids)
        row_length, full, current_start = row_offset, [], old_sample_start
        epoch_offset = epoch * len(ids)
        for current_end, doc in enumerate(ids):
            current_end = epoch_offset + current_end
            tok_len = int(sizes[doc])
            row_length = row_length + tok_len
            if row_length > seq_length:
                if current_end > current_start:
                    full.append((current_start, current_end))
                current_start = current_end
                row_length = tok_len
                if tok_len > seq_length:
                    current_start = current_end + 1
                    row_length = 0
                    continue
        sample_idx.extend(full)
        row_offset, old_sample_start = row_length, current_start
    return np.concatenate(shuffle_idx), sample_idx


def test_packing_matches_megatron_over_epochs():
    rng = np.random.default_rng(0)
    sizes = rng.integers(3, 40, size=57)
    sizes[5] = 80  # longer than a row: skipped
    ours = _Packing(sizes, 64, seed=42)
    shuffle, rows = _megatron_rows(sizes, 64, 42, epochs=3)
    for k, (a, b) in enumerate(rows[:-3]):
        assert ours.row(k).tolist() == shuffle[a:b].tolist(), k
    assert ours.too_long == 1


def test_norm_target_loss_weights_by_hand():
    # one row: sample 1 = input [10, 11] target [12, 13]; sample 2 = input [14] target
    # [15, 16, 17]; then padding. Labels are tokens[1:].
    rows = PackedRows(
        torch.tensor([[10, 11, 12, 13, 14, 15, 16, 17, PAD, PAD]]),
        torch.tensor([[1, 1, 1, 1, 2, 2, 2, 2, 0, 0]]),
        torch.tensor([[1, 1, 0, 0, 1, 0, 0, 0, 0, 0]], dtype=torch.bool),
    )
    b = MTFObjective(norm_target_loss=True).batch(rows)
    # label positions 1..2 (12, 13) count, 3 (14, an input) not, 4..6 (15, 16, 17) count
    assert b.targets.tolist() == [[IGNORE, 12, 13, IGNORE, 15, 16, 17, IGNORE, IGNORE]]
    third = 1 / 3
    expected = [[0, 0.5, 0.5, 0, third, third, third, 0, 0]]
    torch.testing.assert_close(b.loss_weights, torch.tensor(expected, dtype=torch.float64))
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 0]]
    assert b.doc_ids.tolist() == [[1, 1, 1, 1, 2, 2, 2, 2, 0]]
    assert MTFObjective().batch(rows).loss_weights is None


def _loop_rule(doc: list[int], inp: list[bool], non_causal: bool) -> torch.Tensor:
    T = len(doc)
    out = torch.zeros(T, T, dtype=torch.bool)
    for q in range(T):
        for k in range(T):
            ok = k <= q or (non_causal and inp[q] and inp[k])
            out[q, k] = (ok and doc[q] == doc[k]) or q == k
    return out


@pytest.mark.parametrize("non_causal", [False, True])
def test_packed_attention_pattern_against_a_loop(non_causal):
    doc = [1, 1, 1, 1, 2, 2, 2, 3, 3, 0, 0]
    inp = [1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0]
    T = len(doc)
    pos = torch.arange(T)[None]
    spec = MaskSpec(
        T,
        T,
        pos,
        pos,
        doc_ids=torch.tensor([doc]),
        is_input=torch.tensor([inp], dtype=torch.bool) if non_causal else None,
    )
    expected = _loop_rule(doc, [bool(x) for x in inp], non_causal)
    assert torch.equal(spec.allowed()[0, 0], expected)
    mod = spec.mask_mod()
    flex = torch.tensor(
        [[bool(mod(0, 0, torch.tensor(q), torch.tensor(k))) for k in range(T)] for q in range(T)]
    )
    assert torch.equal(flex, expected)


def _model(position: str, attention: str, impl: str) -> BloomLM:
    cfg = ModelConfig(
        n_layer=2,
        hidden=32,
        n_head=4,
        vocab_size=64,
        pad_vocab_multiple=8,
        max_seq_len=64,
        position=position,
        attention=attention,
        attn_impl=impl,
    )
    return BloomLM.build(cfg, device=torch.device("cpu"), seed=0).double()


PAIRS = [([5, 9, 11, 7], [20, 21]), ([30, 31], [40, 41, 42, 43, 44]), ([50, 51, 52], [60])]


def _alone_losses(model: BloomLM, non_causal: bool) -> list[torch.Tensor]:
    """Each sample in its own unpadded row: targets are the target tokens only (a non-causal
    sample is a prefix-LM row whose prefix is its input)."""
    out = []
    for inp, tgt in PAIRS:
        toks = torch.tensor([[*inp, *tgt]])
        targets = toks[:, 1:].clone()
        targets[:, : len(inp) - 1] = IGNORE
        kw = {"prefix_len": torch.tensor([len(inp)])} if non_causal else {}
        out.append(model(toks[:, :-1], targets=targets, **kw))
    return out


@pytest.mark.parametrize(
    "position,impl,non_causal",
    [
        ("alibi", "sdpa", False),
        ("alibi", "sdpa", True),
        ("learned", "sdpa", False),
        ("rotary", "sdpa", True),
    ],
)
def test_packed_row_equals_each_sample_alone(position, impl, non_causal):
    """float64: a packed row (with padding) gives the mean of the samples' own losses
    (norm_target_loss) or their token-weighted mean, and the same gradients."""
    model = _model(position, "prefix_lm" if non_causal else "causal", impl)
    s = _samples(PAIRS)
    rows = pack_rows(s, [np.array([0, 1, 2])], 24, pad_id=PAD)
    for norm in (True, False):
        model.zero_grad()
        batch = MTFObjective(non_causal=non_causal, norm_target_loss=norm).batch(rows)
        packed = model(batch.inputs, **batch.forward_kwargs())
        packed.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        alone = _alone_losses(model, non_causal)
        if norm:
            ref = sum(alone) / len(alone)
        else:
            sizes = [len(t) for _, t in PAIRS]
            ref = sum(loss * n for loss, n in zip(alone, sizes, strict=True)) / sum(sizes)
        ref.backward()
        torch.testing.assert_close(packed, ref, rtol=1e-12, atol=1e-12)
        for n, p in model.named_parameters():
            torch.testing.assert_close(grads[n], p.grad, rtol=1e-9, atol=1e-12, msg=n)


def test_no_gradient_from_the_predictions_of_input_tokens():
    model = _model("alibi", "causal", "sdpa")
    rows = pack_rows(_samples(PAIRS), [np.array([0, 1, 2])], 24, pad_id=PAD)
    batch = MTFObjective(norm_target_loss=True).batch(rows)
    held = {}

    def keep(module, args, output):
        output.retain_grad()
        held["h"] = output

    handle = model.norm.register_forward_hook(keep)
    model(batch.inputs, **batch.forward_kwargs()).backward()
    handle.remove()
    per_position = held["h"].grad[0].abs().sum(-1)  # (T,)
    counted = batch.targets[0] != IGNORE
    assert bool((per_position[~counted] == 0).all())  # inputs, boundaries, padding
    assert bool((per_position[counted] > 0).all())


def test_best_fit_packing_places_every_sample_once_and_wastes_less():
    from bloomforge.mtf.loader import _BestFitPacking

    rng = np.random.default_rng(1)
    sizes = rng.integers(5, 300, size=3000)
    sizes[7] = 2000  # longer than a row: skipped
    row_len = 1025
    best, greedy = _BestFitPacking(sizes, row_len, seed=3), _Packing(sizes, row_len, seed=3)
    best._next_epoch()  # one epoch of each
    greedy._next_epoch()
    placed = np.concatenate(best.rows)
    assert sorted(placed.tolist()) == sorted(set(range(3000)) - {7})  # each sample once
    assert best.too_long == greedy.too_long == 1
    assert all(sizes[r].sum() <= row_len for r in best.rows)
    fill = sizes[placed].sum() / (len(best.rows) * row_len)
    greedy_tokens = sum(sizes[greedy.order[0][a:b]].sum() for a, b in greedy.rows)
    greedy_fill = greedy_tokens / (len(greedy.rows) * row_len)
    assert fill > 0.98 and fill > greedy_fill + 0.03
