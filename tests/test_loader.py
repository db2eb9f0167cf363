"""The mixture loader against the token ids from `tokenizers` (written by tests/token_data.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bloomforge.data.loader import MixtureLoader
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


def _train_stream(ids: list[list[int]], docs_per_shard: int = 50) -> np.ndarray:
    """The training tokens of a group: per shard, all but its last ceil(5%) documents."""
    parts = []
    for start in range(0, len(ids), docs_per_shard):
        docs = ids[start : start + docs_per_shard]
        n_valid = math.ceil(len(docs) * 0.05) if len(docs) > 1 else 0
        parts.extend(docs[: len(docs) - n_valid])
    return np.array([t for d in parts for t in d])


def test_samples_are_an_epoch_permutation_of_packed_windows(folder):
    out, ids = folder
    loader = MixtureLoader(out, SEQ, group_by="source", weights={"ud": 1.0, "tatoeba": 0.0})
    ref = _train_stream(ids[("ud", "en")]), _train_stream(ids[("ud", "fr")])
    # Source "ud" = shards en then fr (sorted by file path), each split on its own.
    stream = np.concatenate(ref)
    n = (len(stream) - 1) // SEQ
    assert loader.samples_per_epoch["ud"] == n
    starts = []
    for _ in range(n // 8):
        for row in loader.next_batch(8).numpy():
            hits = [k for k in range(n) if np.array_equal(stream[k * SEQ : k * SEQ + SEQ + 1], row)]
            assert hits, "a sample that is not a packed window of the training tokens"
            starts.append(hits[0])
    assert len(set(starts)) == len(starts)  # no window twice within an epoch


def test_validation_is_the_held_out_tail_of_each_shard(folder):
    out, ids = folder
    loader = MixtureLoader(out, SEQ, group_by="language")
    docs = ids[("ud", "fr")]
    held = []
    for start in range(0, len(docs), 50):
        chunk = docs[start : start + 50]
        held.extend(chunk[len(chunk) - math.ceil(len(chunk) * 0.05) :])
    stream = np.array([t for d in held for t in d])
    assert loader.validation_tokens("fr") == len(stream)
    rows = torch.cat(list(loader.validation_batches("fr", 4)))
    for k, row in enumerate(rows.numpy()):
        assert np.array_equal(row, stream[k * SEQ : k * SEQ + SEQ + 1])


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


def test_two_ranks_together_see_exactly_one_rank_alone(folder):
    out, _ = folder
    single = MixtureLoader(out, SEQ, seed=3)
    r0, r1 = MixtureLoader(out, SEQ, seed=3), MixtureLoader(out, SEQ, seed=3)
    for bs in (4, 8, 8, 12, 16):  # a ramping batch size
        whole = single.next_batch(bs)
        parts = torch.cat([r0.next_batch(bs, 0, 2), r1.next_batch(bs, 1, 2)])
        assert torch.equal(whole, parts)


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
    sizes = {lang: len(_train_stream(ids[(src, lang)])) for src, lang in ids}
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
    broken = tmp_path / "broken"
    write_token_folder(broken, {("s", "fr"): corpus_lines("fr", 20)})
    shard = broken / "s" / "fr" / "00000.ds"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(BloomforgeError, match=r"00000.ds: \d+ bytes, manifest.json implies"):
        MixtureLoader(broken, SEQ)
