"""Finding near duplicates among SimHash fingerprints, and keeping the first of each cluster.

In: 64-bit fingerprints (numpy uint64) in corpus order. Out: for each document the index of the
document it is a duplicate of (itself when kept).

Manku, Jain and Das Sarma (2007) "Detecting near-duplicates for web crawling": split the 64
bits into `blocks` blocks; two fingerprints within Hamming distance k agree exactly on at least
`blocks - k` blocks (pigeonhole), so they meet in one of the C(blocks, blocks - k) tables keyed
by those blocks. ROOTS (BigScience data-preparation) used 6 blocks and k = 4: 15 tables keyed by
about 21 bits. Candidates are verified with a popcount; near-duplicate pairs are joined into
connected components and the first document of each component is kept.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def block_masks(blocks: int) -> list[int]:
    """Bit masks of `blocks` contiguous blocks covering the 64 bits (sizes differ by <= 1)."""
    masks = []
    for bits in np.array_split(np.arange(64), blocks):
        masks.append(sum(1 << int(b) for b in bits))
    return masks


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b))


def near_pairs(fingerprints: np.ndarray, max_distance: int, blocks: int) -> np.ndarray:
    """Pairs (i, j), i < j, of distinct fingerprints within `max_distance` bits: (P, 2) int64.

    Equal fingerprints are one entry here (callers merge them with np.unique first)."""
    fps = np.asarray(fingerprints, dtype=np.uint64)
    masks = block_masks(blocks)
    found: list[np.ndarray] = []
    for table in combinations(range(blocks), blocks - max_distance):
        mask = np.uint64(sum(masks[b] for b in table))
        keys = fps & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, keys.size])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start : start + size])
            dist = hamming(fps[members][:, None], fps[members][None, :])
            ii, jj = np.nonzero(np.triu(dist <= max_distance, k=1))
            found.append(np.stack([members[ii], members[jj]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def first_of_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """For n items joined by `pairs`, the smallest index of each item's connected component."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


def simhash_representatives(
    fingerprints: np.ndarray, max_distance: int = 4, blocks: int = 6
) -> np.ndarray:
    """For fingerprints in corpus order, the index of the first document of each one's cluster.

    A document is a near duplicate (to remove) where the result differs from its own index."""
    fps = np.asarray(fingerprints, dtype=np.uint64)
    unique, inverse = np.unique(fps, return_inverse=True)
    pairs = near_pairs(unique, max_distance, blocks)
    # join the distinct fingerprints, then every document to the first holder of its fingerprint
    n_docs = fps.size
    doc_pairs = [np.stack([inverse + n_docs, np.arange(n_docs)], axis=1)]
    doc_pairs.append(pairs + n_docs)
    rep = first_of_components(n_docs + unique.size, np.concatenate(doc_pairs))
    return rep[:n_docs]


def group_representatives(keys: np.ndarray) -> np.ndarray:
    """For keys in corpus order, the index of the first document with the same key (0 = no key)."""
    keys = np.asarray(keys, dtype=np.uint64)
    order = np.lexsort((np.arange(keys.size), keys))
    sorted_keys = keys[order]
    starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    first = order[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
    rep = np.empty(keys.size, dtype=np.int64)
    rep[order] = first
    rep[keys == 0] = np.flatnonzero(keys == 0)
    return rep
