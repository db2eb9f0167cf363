"""Exact-substring deduplication with a suffix array (Lee et al. 2022, "Deduplicating Training
Data Makes Language Models Better", ExactSubstr), keeping the first occurrence.

In: documents as UTF-8 bytes, in corpus order. Out: per document a boolean mask of the bytes that
repeat a span of >= `min_len` bytes seen earlier (in an earlier document or earlier in the same
one), and `cut_spans` to remove them on character boundaries.

The documents are joined with separators of bytes 0xF8-0xFF (never in UTF-8, unique per
document), the suffix array comes from pydivsufsort (libdivsufsort) and the LCP array from its
Kasai implementation. Two suffixes share a prefix of >= L bytes inside their documents exactly when
they sit in one run of the suffix array whose adjacent LCPs (capped at the document ends) are all
>= L. Every suffix of a run but the earliest one is a later occurrence, and marking its first L
bytes marks the whole repeated span: a later repeat of length M >= L starts M - L + 1 later
suffixes. Memory: about 40 bytes per input byte (int32 arrays), so callers shard the corpus.
"""

from __future__ import annotations

import numpy as np
import pydivsufsort

_SEP_DIGITS = 9  # base-8 digits of the document number in a separator: 8**9 = 134M documents


def _separator(index: int) -> bytes:
    return bytes(0xF8 + ((index >> (3 * k)) & 7) for k in range(_SEP_DIGITS)) + b"\xff"


def later_repeat_masks(docs: list[bytes], min_len: int = 50) -> list[np.ndarray]:
    """For each document, True on the bytes of spans >= `min_len` bytes that occurred before."""
    if not docs:
        return []
    if len(docs) >= 8**_SEP_DIGITS:
        raise ValueError("too many documents in one suffix-array shard")
    pieces, starts = [], []
    offset = 0
    for i, doc in enumerate(docs):
        starts.append(offset)
        sep = _separator(i)
        pieces += [doc, sep]
        offset += len(doc) + len(sep)
    corpus = b"".join(pieces)
    n = len(corpus)
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    # bytes left to the end of the document at each position (0 on separators)
    to_end = np.zeros(n, dtype=np.int32)
    for start, length in zip(starts, lengths, strict=True):
        to_end[start : start + length] = np.arange(length, 0, -1, dtype=np.int32)
    mask = np.zeros(n + 1, dtype=np.int32)
    if n > 1 and lengths.max() >= min_len:
        sa = pydivsufsort.divsufsort(corpus).astype(np.int64)
        lcp = pydivsufsort.kasai(corpus, sa)[:-1]  # lcp[r] = LCP(sa[r], sa[r + 1])
        capped = np.minimum(lcp, np.minimum(to_end[sa[:-1]], to_end[sa[1:]]))
        new_run = np.r_[True, capped < min_len]
        run_starts = np.flatnonzero(new_run)
        run_first = np.minimum.reduceat(sa, run_starts)[np.cumsum(new_run) - 1]
        later = sa[(sa != run_first) & (to_end[sa] >= min_len)]
        np.add.at(mask, later, 1)
        np.add.at(mask, later + min_len, -1)
    marked = np.cumsum(mask[:n]) > 0
    return [marked[s : s + length] for s, length in zip(starts, lengths, strict=True)]


def brute_force_masks(docs: list[bytes], min_len: int = 50) -> list[np.ndarray]:
    """Reference for tests: a window is later when the same bytes occur at any earlier start."""
    seen: set[bytes] = set()
    masks = []
    for doc in docs:
        mask = np.zeros(len(doc), dtype=bool)
        for i in range(len(doc) - min_len + 1):
            window = doc[i : i + min_len]
            if window in seen:
                mask[i : i + min_len] = True
            seen.add(window)
        masks.append(mask)
    return masks


def mask_spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) byte spans where `mask` is True."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def cut_spans(data: bytes, spans: list[tuple[int, int]]) -> bytes:
    """`data` without `spans`, each shrunk to whole UTF-8 characters so the result stays valid."""
    out, last = [], 0
    for start, end in spans:
        while start < end and (data[start] & 0xC0) == 0x80:  # continuation byte: char began before
            start += 1
        while end > start and end < len(data) and (data[end] & 0xC0) == 0x80:
            end -= 1
        if start < end:
            out.append(data[last:start])
            last = end
    out.append(data[last:])
    return b"".join(out)
