"""Language identification of documents with py3langid (its model ships inside the wheel).

In: datatrove `Document`s and the source's configured language (an ISO 639-1 code, or "auto").
Out: the same documents with `metadata["language_score"]`, the probability (0..1) the identifier
gives the document's language (no score for a language it does not know), and, for "auto"
sources, `metadata["language"]` set to the top prediction (ISO 639-1 where one exists, else the
identifier's ISO 639-3 code).

The identifier is loaded on first use, once per process, so the step pickles without it
(datatrove's multiprocess executor). py3langid has no batch API; documents are scored one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

AUTO = "auto"
_UNKNOWN = ("unknown", "und")


@cache
def identifier() -> Any:
    """py3langid's identifier with normalised probabilities (API of 0.4, or 0.3's pickle), with
    the byte walk vectorised where its model allows (same scores, see `_fast_class`)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    cls = _fast_class(LanguageIdentifier)
    if hasattr(cls, "from_model_file"):
        ident = cls.from_model_file(MODEL_FILE, norm_probs=True)
    else:
        ident = cls.from_pickled_model(MODEL_FILE, norm_probs=True)
    if getattr(ident.nb_ptc, "dtype", None) == np.float16:
        # numpy converts the gathered float16 rows to float32 for every document anyway; one
        # float32 copy (57 MB) gives the same BLAS call on the same values (identical scores,
        # tested against py3langid) and saves ~10% of the time
        ident.nb_ptc = ident.nb_ptc.astype(np.float32)
    return ident


_MAX_WINDOW = 16


def _automaton_depth(nextmove: np.ndarray, rowbase: np.ndarray) -> int:
    """Longest feature prefix the byte automaton tracks: breadth-first from the start state, a
    state's distance is the length of the byte string it stands for."""
    depth = np.full(len(rowbase), -1, dtype=np.int64)
    depth[0] = 0
    frontier, level = np.array([0]), 0
    while frontier.size:
        level += 1
        nxt = nextmove[(rowbase[frontier][:, None] + np.arange(256)).ravel()].astype(np.int64)
        nxt = np.unique(nxt[depth[nxt] < 0])
        depth[nxt] = level
        frontier = nxt
    return int(depth.max())


def _fast_class(base: type) -> type:
    """`base` (py3langid's LanguageIdentifier) with `_raw_score` counting features with numpy.

    py3langid finds its features (byte n-grams) with an Aho-Corasick automaton walked one byte at
    a time in Python. The automaton's state after byte i stands for the longest suffix of the text
    that is a prefix of a feature, at most `depth` bytes, so it is also the state reached from the
    start over bytes i-depth+1..i alone: all positions are walked at once, `depth` steps. Feature
    counts keep py3langid's first-seen order, so its scoring gives bit-identical results. Any
    model or version without these internals falls back to py3langid's own walk.
    """
    needed = ("_raw_score", "_sparse_score")
    if not all(hasattr(base, n) for n in needed):
        return base

    class FastIdentifier(base):  # type: ignore[misc,valid-type]
        __slots__ = ("_walk",)

        def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
            try:
                return self._walk
            except AttributeError:
                pass
            try:
                nextmove = np.asarray(memoryview(self.tk_nextmove))
                rowbase = np.asarray([r << 8 for r in self.tk_row], dtype=np.int64)
                output = np.asarray(self.tk_output, dtype=np.int64)
                depth = _automaton_depth(nextmove, rowbase)
                walk = (nextmove, rowbase, output, depth) if depth <= _MAX_WINDOW else None
            except (AttributeError, TypeError, ValueError):
                walk = None
            self._walk = walk
            return walk

        def _raw_score(self, text: Any) -> Any:
            tables = self._tables() if isinstance(text, bytes) else None
            if tables is None or not text:
                return super()._raw_score(text)
            nextmove, rowbase, output, depth = tables
            data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
            n = len(data)
            states = np.zeros(n, dtype=np.int64)
            for k in range(min(depth, n) - 1, -1, -1):  # byte i-k of the window ending at i
                states[k:] = nextmove[rowbase[states[k:]] + data[: n - k]]
            features = output[states]
            features = features[features >= 0]
            if not features.size:
                return super()._raw_score(text)
            keys, first, counts = np.unique(features, return_index=True, return_counts=True)
            order = np.argsort(first, kind="stable")
            visits = dict(zip(keys[order].tolist(), counts[order].tolist(), strict=True))
            return self._sparse_score(visits, self.nb_ptc)

    return FastIdentifier


@cache
def _labels() -> dict[str, int]:
    ident = identifier()
    index: dict[str, int] = {}
    for i, label in enumerate(ident.nb_classes):
        index.setdefault(label, i)
    return index


def identify(text: str, language: str = AUTO) -> tuple[str, float | None]:
    """(language, score): the top prediction for "auto", else `language` and the probability
    of it (None for a language the identifier does not know: no score, as BigScience's
    languages without a fastText label)."""
    ident = identifier()
    if language == AUTO:
        label, score = ident.classify(text)
        return label, float(score)
    if language not in _labels():
        return language, None
    # rank() gives one probability per label (script aliases folded), best first
    return language, float(dict(ident.rank(text))[language])


class LanguageId(PipelineStep):
    """Adds `language_score` (and `language` for "auto" sources whose records do not name their
    language: a record's own language, as the reader set it, is kept and scored)."""

    name = "language id (py3langid)"
    type = "🏷 - ANNOTATOR"

    def __init__(self, language: str = AUTO, max_chars: int = 0) -> None:
        super().__init__()
        self.language = language
        self.max_chars = max_chars

    def run(
        self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1
    ) -> Iterator[Document]:
        for doc in data:
            with self.track_time():
                text = doc.text[: self.max_chars] if self.max_chars else doc.text
                language = self.language
                known = doc.metadata.get("language")
                if language == AUTO and known and known not in _UNKNOWN:
                    language = known  # named by the record or its file: score that language
                label, score = identify(text, language)
                doc.metadata["language"] = label
                if score is None:
                    self.stat_update("language_not_scored")
                else:
                    doc.metadata["language_score"] = round(score, 4)
                    self.stat_update(f"language_{label}")
            yield doc
