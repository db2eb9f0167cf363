"""The mixture loader against references: Megatron-DeepSpeed's GPT dataset indices transcribed
below, token ids from `tokenizers` (tests/token_data.py) and hand-made folders whose every token
id is unique, so each token of a sample says which document and position it came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bloomforge.data.loader import MixtureLoader, train_valid_test_split
from bloomforge.errors import BloomforgeError
from token_data import corpus_lines, write_token_folder

SEQ = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    groups = {
        ("ud", "fr"): corpus_lines("fr", 120),
        ("ud", "en"): corpus_lines("en", 60),
        ("tatoeba", "eu"): corpus_lines("eu", 40),
    }
    ids = write_token_folder(out, groups, docs_per_shard=50)
    return out, ids


# -- reference: megatron/data/gpt_dataset.py of bigscience-workshop/Megatron-DeepSpeed ----------
def _megatron_samples(documents: list, num_samples: int, seq_length: int, seed) -> list:
    """GPTDataset(documents, num_samples, seq_length, seed)[0:num_samples], transcribed from
    _build_index_mappings, _num_epochs, _build_doc_idx, _build_sample_idx (the Python version),
    _build_shuffle_idx and GPTDataset.__getitem__. `documents` plays the indexed dataset."""
    sizes = np.array([len(d) for d in documents], dtype=np.int32)
    docs = np.arange(len(documents), dtype=np.int32)
    tokens_per_epoch = int(np.sum(sizes[docs]))
    num_epochs, total = 0, 0
    while True:  # _num_epochs
        num_epochs += 1
        total += tokens_per_epoch
        if (total - 1) // seq_length >= num_samples:
            break
    np_rng = np.random.RandomState(seed=seed)
    separate_last_epoch = False
    if num_epochs > 1:
        from_epochs_minus_one = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
        last_epoch = num_samples - from_epochs_minus_one
        per_epoch = (tokens_per_epoch - 1) // seq_length
        separate_last_epoch = last_epoch < int(0.95 * per_epoch)

    def build_doc_idx(n_epochs, separate):
        if not separate or n_epochs == 1:
            doc_idx = np.mgrid[0:n_epochs, 0 : len(docs)][1]
            doc_idx[:] = docs
            doc_idx = doc_idx.reshape(-1).astype(np.int32)
            np_rng.shuffle(doc_idx)
            return doc_idx
        first = build_doc_idx(n_epochs - 1, False)
        return np.concatenate((first, build_doc_idx(1, False)))

    doc_idx = build_doc_idx(num_epochs, separate_last_epoch)
    # _build_sample_idx
    n = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = np.zeros([n + 1, 2], dtype=np.int32)
    sample_index, doc_idx_index, doc_offset = 1, 0, 0
    while sample_index <= n:
        remaining = seq_length + 1
        while remaining != 0:
            doc_length = sizes[doc_idx[doc_idx_index]] - doc_offset
            remaining -= doc_length
            if remaining <= 0:
                doc_offset += remaining + doc_length - 1
                remaining = 0
            else:
                doc_idx_index += 1
                doc_offset = 0
        sample_idx[sample_index] = doc_idx_index, doc_offset
        sample_index += 1
    # _build_shuffle_idx
    first_part = from_epochs_minus_one if separate_last_epoch else n
    shuffle_idx = np.arange(first_part, dtype=np.uint32)
    np_rng.shuffle(shuffle_idx)
    if first_part != n:
        shuffle_last = np.arange(first_part, n, dtype=np.uint32)
        np_rng.shuffle(shuffle_last)
        shuffle_idx = np.concatenate((shuffle_idx, shuffle_last))

    def get(doc, offset=0, length=None):
        d = documents[doc]
        return d[offset:] if length is None else d[offset : offset + length]

    out = []
    for idx in shuffle_idx[:num_samples]:  # GPTDataset.__getitem__
        (f, off_f), (last, off_l) = sample_idx[idx], sample_idx[idx + 1]
        if f == last:
            out.append(get(doc_idx[f], off_f, off_l - off_f + 1))
        else:
            parts = [get(doc_idx[f], off_f)]
            parts += [get(doc_idx[i]) for i in range(f + 1, last)]
            parts.append(get(doc_idx[last], 0, off_l + 1))
            out.append(np.concatenate(parts))
    return out


def _n_train(n_docs: int) -> int:
    """tr11-176B-ml's train range "0:0.950" (megatron/data/dataset_utils.py get_split_by_range_)."""
    return round(0.95 * n_docs)


# -- hand-made folders with a unique id per token ----------------------------------------------
def _write_unique(out: Path, datasets: dict, docs_per_shard: int) -> dict:
    """{(source, language): [document lengths]} -> the same keys with each document's token ids,
    written as a token folder (ids 1, 2, 3, ... in dataset and document order)."""
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text("{}")
    shards, docs_out, next_id = [], {}, 1
    for (source, lang), lengths in sorted(datasets.items()):
        docs = []
        for n in lengths:
            docs.append(np.arange(next_id, next_id + n, dtype="<u2"))
            next_id += n
        docs_out[(source, lang)] = docs
        for part, start in enumerate(range(0, len(docs), docs_per_shard)):
            chunk = docs[start : start + docs_per_shard]
            rel = f"{source}/{lang}/{part:05d}.ds"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            np.concatenate(chunk).tofile(out / rel)
            np.cumsum([len(d) for d in chunk]).astype("<u8").tofile(out / f"{rel}.index")
            shards.append(
                {
                    "file": rel,
                    "source": source,
                    "language": lang,
                    "tokens": sum(len(d) for d in chunk),
                    "documents": len(chunk),
                }
            )
    assert next_id < 2**16
    manifest = {
        "format": "datatrove-ds",
        "version": 1,
        "token_size": 2,
        "dtype": "uint16",
        "vocab_size": 2**16,
        "eos_id": 0,
        "tokenizer": "tokenizer.json",
        "shards": shards,
        "sources": {},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return docs_out


def _lengths(n: int) -> list[int]:
    return [3 + (7 * i) % 6 for i in range(n)]  # 3..8 tokens


def _epochs(loader: MixtureLoader, group: str, epochs: int) -> list[np.ndarray]:
    n = loader.samples_per_epoch[group]
    rows = np.concatenate([loader.next_batch(1).numpy() for _ in range(epochs * n)])
    return [rows[e * n : (e + 1) * n] for e in range(epochs)]


def _unshuffle(samples: np.ndarray) -> np.ndarray:
    """The packed token stream of one epoch, rebuilt by chaining samples on their shared token
    (each sample's last token is the next one's first)."""
    by_first = {int(row[0]): row for row in samples}
    lasts = {int(row[-1]) for row in samples}
    (start,) = [row for row in samples if int(row[0]) not in lasts]
    stream, row = [start], start
    while int(row[-1]) in by_first:
        row = by_first[int(row[-1])]
        stream.append(row)
    assert len(stream) == len(samples)
    return np.concatenate([stream[0], *(r[1:] for r in stream[1:])])


# -- document order as Megatron -----------------------------------------------------------------
def test_samples_equal_megatrons_gpt_dataset_epoch_by_epoch(folder):
    """Group "ud" = the training documents of datasets ud/en then ud/fr (file order), each split
    on its own; epoch 0 is Megatron's GPTDataset with RandomState(seed), epoch e RandomState
    ([seed, e])."""
    out, ids = folder
    loader = MixtureLoader(out, SEQ, seed=7, weights={"ud": 1.0, "tatoeba": 0.0})
    en, fr = ids[("ud", "en")], ids[("ud", "fr")]
    docs = [np.array(d) for d in en[: _n_train(len(en))] + fr[: _n_train(len(fr))]]
    n = loader.samples_per_epoch["ud"]
    assert n == (sum(len(d) for d in docs) - 1) // SEQ
    for e, got in enumerate(_epochs(loader, "ud", 3)):
        expected = _megatron_samples(docs, n, SEQ, 7 if e == 0 else [7, e])
        assert np.array_equal(got, np.stack(expected)), f"epoch {e}"


def test_a_partial_epoch_is_megatrons_for_that_many_samples(folder):
    """A run that reads fewer samples than an epoch gets what Megatron gives for that count."""
    out, ids = folder
    loader = MixtureLoader(out, SEQ, seed=1234, group_by="language", weights={"eu": 1.0})
    docs = [np.array(d) for d in ids[("tatoeba", "eu")][: _n_train(40)]]
    got = loader.next_batch(10).numpy()
    assert np.array_equal(got, np.stack(_megatron_samples(docs, 10, SEQ, 1234)))


def test_every_epoch_is_a_new_document_order_with_every_token_once(tmp_path):
    docs = _write_unique(tmp_path / "t", {("s", "xx"): _lengths(60)}, docs_per_shard=16)
    train = docs[("s", "xx")][: _n_train(60)]
    tokens = sum(len(d) for d in train)
    seq = 8
    loader = MixtureLoader(tmp_path / "t", seq, seed=5)
    n = loader.samples_per_epoch["s"]
    assert n == (tokens - 1) // seq
    first = {int(d[0]): i for i, d in enumerate(train)}
    orders = []
    for samples in _epochs(loader, "s", 3):
        stream = _unshuffle(samples)
        assert len(stream) == n * seq + 1 and len(set(stream.tolist())) == len(stream)
        # The stream is whole training documents back to back; only the end of the last one
        # and the documents after it are dropped (fewer than seq tokens, as Megatron drops).
        order, pos = [], 0
        while pos < len(stream):
            d = first[int(stream[pos])]
            assert np.array_equal(stream[pos : pos + len(train[d])], train[d][: len(stream) - pos])
            order.append(d)
            pos += len(train[d])
        assert len(set(order)) == len(order)
        assert tokens - len(stream) < seq
        orders.append(order)
    assert orders[0] != orders[1] != orders[2] != orders[0]
    assert orders[0] != sorted(orders[0])


def test_resume_mid_epoch_gives_the_same_next_batches(folder):
    out, _ = folder
    a = MixtureLoader(out, SEQ, seed=7)
    batches = [a.next_batch(6) for _ in range(30)]  # several epochs of the small groups
    b = MixtureLoader(out, SEQ, seed=7)
    for _ in range(11):
        b.next_batch(6)
    state = b.state_dict()
    c = MixtureLoader(out, SEQ, seed=7)
    c.load_state_dict(state)
    for expected in batches[11:]:
        assert torch.equal(c.next_batch(6), expected)


def test_resume_in_a_later_epoch(tmp_path):
    _write_unique(tmp_path / "t", {("a", "x"): _lengths(30), ("b", "y"): _lengths(50)}, 7)
    a = MixtureLoader(tmp_path / "t", 8, seed=2)
    batches = [a.next_batch(4) for _ in range(40)]
    assert a.state_dict()["group_counts"]["a"] > 2 * a.samples_per_epoch["a"]
    b = MixtureLoader(tmp_path / "t", 8, seed=2)
    for _ in range(25):
        b.next_batch(4)
    assert b.state_dict()["group_counts"]["a"] > b.samples_per_epoch["a"]
    c = MixtureLoader(tmp_path / "t", 8, seed=2)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))  # as trainer.json stores it
    for expected in batches[25:]:
        assert torch.equal(c.next_batch(4), expected)


def test_two_ranks_together_see_exactly_one_rank_alone(folder):
    out, _ = folder
    single = MixtureLoader(out, SEQ, seed=3)
    r0, r1 = MixtureLoader(out, SEQ, seed=3), MixtureLoader(out, SEQ, seed=3)
    for bs in (4, 8, 8, 12, 16, 64, 64):  # a ramping batch size, past the first epochs
        whole = single.next_batch(bs)
        parts = torch.cat([r0.next_batch(bs, 0, 2), r1.next_batch(bs, 1, 2)])
        assert torch.equal(whole, parts)


# -- validation split per dataset with Megatron's rounding ----------------------------------------
def test_split_boundaries_by_hand():
    """megatron/data/dataset_utils.py get_train_valid_test_split_, hand-computed."""
    assert train_valid_test_split([0.95, 0.05], 3) == [0, 3, 3, 3]  # round(2.85), round(0.15)
    assert train_valid_test_split([0.95, 0.05], 19) == [0, 18, 19, 19]  # round(18.05)
    assert train_valid_test_split([0.95, 0.05], 20) == [0, 19, 20, 20]
    assert train_valid_test_split([0.95, 0.05], 21) == [0, 20, 21, 21]  # round(19.95)
    assert train_valid_test_split([0.95, 0.05], 100) == [0, 95, 100, 100]
    assert train_valid_test_split([949, 50, 1], 1000) == [0, 949, 999, 1000]  # "949,50,1"
    # Thirds of 2: each rounds to 1, the sum 3 overshoots by 1, every boundary moves back by 1.
    assert train_valid_test_split([1, 1, 1], 2) == [0, 0, 1, 2]
    # tr11 wrote its split as ranges ("0:0.950", get_split_by_range_): the same sizes.
    for n in range(3000):
        assert train_valid_test_split([0.95, 0.05], n)[1] == round(0.95 * n)


@pytest.mark.parametrize(("n_docs", "n_valid"), [(3, 0), (19, 1), (20, 1), (21, 1), (100, 5)])
def test_validation_is_the_rounded_tail_of_each_dataset(tmp_path, n_docs, n_valid):
    """One dataset in shards of 7 documents: the held-out tail crosses shard files (100 = 14 x 7
    + 2: its 5 documents lie in the last two files)."""
    docs = _write_unique(tmp_path / "t", {("s", "xx"): _lengths(n_docs)}, docs_per_shard=7)
    docs = docs[("s", "xx")]
    seq = 4
    loader = MixtureLoader(tmp_path / "t", seq)
    held = np.concatenate([np.zeros(0, dtype="<u2"), *docs[n_docs - n_valid :]])
    assert loader.validation_tokens("s") == len(held)
    rows = [row for b in loader.validation_batches("s", 3) for row in b.numpy()]
    assert len(rows) == max(0, (len(held) - 1) // seq)
    for k, row in enumerate(rows):
        assert np.array_equal(row, held[k * seq : k * seq + seq + 1])
    train_tokens = sum(len(d) for d in docs[: n_docs - n_valid])
    assert loader.samples_per_epoch["s"] == (train_tokens - 1) // seq
    first_held = int(held[0]) if len(held) else 2**16
    assert _epochs(loader, "s", 1)[0].max() < first_held  # no held-out token trains


def test_each_dataset_of_a_group_is_split_on_its_own(tmp_path):
    """Group "fr" holds two datasets (src a: 21 documents, src b: 19): 1 + 1 held out, each its
    own tail; per shard (files of 5) ceil(5%) would have held out 4 + 4."""
    docs = _write_unique(
        tmp_path / "t", {("a", "fr"): _lengths(21), ("b", "fr"): _lengths(19)}, docs_per_shard=5
    )
    loader = MixtureLoader(tmp_path / "t", 4, group_by="language")
    held = np.concatenate([docs[("a", "fr")][20], docs[("b", "fr")][18]])
    assert loader.validation_tokens("fr") == len(held)
    rows = np.concatenate([b.numpy() for b in loader.validation_batches("fr", 8)])
    for k, row in enumerate(rows):
        assert np.array_equal(row, held[k * 4 : k * 4 + 5])


# -- mixture --------------------------------------------------------------------------------------
def test_explicit_weights_hold_within_two_percent_over_10k_samples(folder):
    out, _ = folder
    weights = {"ud": 0.7, "tatoeba": 0.3}
    loader = MixtureLoader(out, SEQ, weights=weights)
    groups = loader.group_of_next(10_000)
    for g, w in weights.items():
        assert abs(groups.count(g) / 10_000 - w) < 0.02


def test_alpha_sampling_by_language(folder):
    out, ids = folder
    alpha = 0.3
    loader = MixtureLoader(out, SEQ, group_by="language", alpha=alpha)
    sizes = {lang: sum(map(len, d[: _n_train(len(d))])) for (_, lang), d in ids.items()}
    raw = {lang: n**alpha for lang, n in sizes.items()}
    expected = {lang: v / sum(raw.values()) for lang, v in raw.items()}
    groups = loader.group_of_next(10_000)
    for lang, p in expected.items():
        assert abs(groups.count(lang) / 10_000 - p) < 0.02


def test_bad_folders_give_one_line_errors(folder, tmp_path):
    out, _ = folder
    with pytest.raises(BloomforgeError, match=r"no manifest\.json"):
        MixtureLoader(tmp_path, SEQ)
    with pytest.raises(BloomforgeError, match="unknown group"):
        MixtureLoader(out, SEQ, weights={"wiki": 1.0})
    with pytest.raises(BloomforgeError, match="fewer than"):
        MixtureLoader(out, 100_000)
    with pytest.raises(BloomforgeError, match="valid_fraction"):
        MixtureLoader(out, SEQ, valid_fraction=1.0)
    broken = tmp_path / "broken"
    write_token_folder(broken, {("s", "fr"): corpus_lines("fr", 20)})
    shard = broken / "s" / "fr" / "00000.ds"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(BloomforgeError, match=r"00000.ds: \d+ bytes, manifest.json implies"):
        MixtureLoader(broken, SEQ)
