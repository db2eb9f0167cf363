"""The ROOTS OSCAR quality filters as datatrove steps that say why they removed a document.

In: datatrove `Document`s with `metadata["language"]` (and `language_score` from language
identification). Out: the kept documents; every document is counted in the removal ledger
(`CountedFilter`) as kept or under a named reason. Parameters are BigScience's for the document's
language (`default` for others), overridden per language by `FilterConfig.parameters`; a filter
whose `cond_check_*` parameter is false for a language keeps that language's documents.

Definitions follow BigScience's data-preparation `filtering.py` (class `Filtering`), with words
from `bloomforge.data.filters.words`:
- number_words: words (not lower-cased) within [number_words_min_cutoff, _max_cutoff].
- character_repetition: with the character n-grams of the text (n = character_repetition_length)
  and their counts, k = min(floor(sqrt(#distinct n-grams)), #n-grams seen more than once); ratio =
  sum of the k largest counts / #n-grams; removed if ratio > character_repetition_max_cutoff.
- word_repetition: over the word n-grams (n = word_repetition_length), the share of n-gram
  occurrences whose n-gram occurs more than once; removed if > word_repetition_max_cutoff.
- special_characters: share of the text's characters that are special; removed if > max.
- stopwords / flagged_words: (words + word-group augmentations in the list) / #words, capped at
  1; removed if below stopwords_min_cutoff / above flagged_words_max_cutoff. No list for a
  language: no check, as in BigScience.
- lang_id: removed if `language_score` (probability of the document's language) is below
  lang_id_min_cutoff; BigScience also required that language to be the top prediction, which any
  score above 0.5 implies (probabilities sum to 1).
- perplexity: KenLM perplexity (BigScience's formula) above perplexity_max_cutoff.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import cache
from typing import Any

import numpy as np
from datatrove.data import Document

from bloomforge.data.filters import resources, words
from bloomforge.data.filters.config import FilterConfig
from bloomforge.data.filters.params import (
    SCRIPT_SPLIT_LANGUAGES,
    language_parameters,
    resolve_characters,
)
from bloomforge.data.ledger import CountedFilter

_NUMPY_FROM = 400  # n-grams; below this Counter is faster than numpy's set-up
_HASH_BASE = 0x9E3779B97F4A7C15  # odd 64-bit multiplier (golden ratio), for the hashed case


def _top_share(counts: np.ndarray, total: int) -> float:
    """BigScience's ratio from n-gram counts: the k = min(isqrt(#distinct), #repeated) largest
    counts over all n-grams."""
    count_counts = np.bincount(counts)  # how many n-grams occur 0, 1, 2, ... times
    distinct = len(counts)
    ones = int(count_counts[1]) if len(count_counts) > 1 else 0
    k = min(math.isqrt(distinct), distinct - ones)
    top = 0
    for value in np.flatnonzero(count_counts)[::-1].tolist():  # few distinct values
        if k <= 0:
            break
        take = min(k, int(count_counts[value]))
        top += take * value
        k -= take
    return top / total


def _ngram_counts(text: str, n: int) -> np.ndarray:
    """Counts of the distinct character n-grams, one integer key per n-gram. Exact when the n
    characters fit 64 bits (n <= 3 code points of 21 bits, or n ranks of the text's distinct
    characters); otherwise a 64-bit polynomial hash (a collision, ~1e-9 for 1e5 n-grams, would
    merge two n-grams)."""
    chars = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    m = len(chars) - n + 1
    codes = chars.astype(np.uint64)
    base = 1 << 21
    if 21 * n > 64:
        present = np.zeros(int(chars.max()) + 1, dtype=np.int64)
        present[chars] = 1
        rank = np.cumsum(present) - 1  # rank of each character among the text's distinct ones
        distinct = int(rank[-1]) + 1
        codes = rank[chars].astype(np.uint64)
        base = distinct if distinct**n < 2**64 else _HASH_BASE
    keys = codes[:m].copy()
    factor = np.uint64(base)
    for j in range(1, n):
        keys *= factor  # wraps modulo 2**64 (hashed case)
        keys += codes[j : j + m]
    keys.sort()
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return np.diff(np.append(starts, m))


def character_repetition_ratio(text: str, n: int) -> float:
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    if total < _NUMPY_FROM:
        counts = Counter([text[i : i + n] for i in range(total)]).values()
        return _top_share(np.fromiter(counts, dtype=np.int64, count=len(counts)), total)
    return _top_share(_ngram_counts(text, n), total)


def word_repetition_ratio(word_list: list[str], n: int) -> float:
    total = len(word_list) - n + 1
    if total <= 0:
        return 0.0
    # tuples of words equal " ".join(...) n-grams: words never contain spaces
    counts = Counter(zip(*(word_list[i:] for i in range(n)), strict=False))
    return sum(c for c in counts.values() if c > 1) / total


@cache
def _special_table(chars: str) -> dict[int, None]:
    return dict.fromkeys(map(ord, resolve_characters(chars)))


def special_characters_ratio(text: str, chars: str) -> float:
    if not text:
        return 0.0
    # str.translate deleting the special characters: one C pass (a regex class with every
    # emoji range is scanned range by range)
    return (len(text) - len(text.translate(_special_table(chars)))) / len(text)


def list_ratio(
    word_list: list[str], vocabulary: frozenset[str], group_sizes: list[int], join: str
) -> float:
    """BigScience's stop-word / flagged-word ratio: matches among words and word groups."""
    if not word_list:
        return 0.0
    hits = sum(map(vocabulary.__contains__, word_list))
    for size in group_sizes:
        groups = map(join.join, zip(*(word_list[i:] for i in range(size)), strict=False))
        hits += sum(map(vocabulary.__contains__, groups))
    return min(hits / len(word_list), 1.0)


class RootsFilter(CountedFilter):
    """One ROOTS filter: reads the document's language, applies that language's parameters."""

    ledger_name = "roots"
    cond_key = ""

    def __init__(self, config: FilterConfig | None = None, exclusion_writer: Any = None) -> None:
        super().__init__(exclusion_writer)
        self.config = config or FilterConfig()
        self.name = f"ROOTS {self.ledger_name}"
        self._settings: dict[str, dict[str, Any]] = {}
        # The verdict on the last document: `EachFilterAlone` asks every filter first, then the
        # chain asks again for the same document object; the second time costs nothing.
        self._last: tuple[Document | None, bool | tuple[bool, str]] = (None, True)

    def settings(self, language: str) -> dict[str, Any]:
        found = self._settings.get(language)
        if found is None:
            found = language_parameters(language, self.config.parameters)
            found["_script_split"] = language in SCRIPT_SPLIT_LANGUAGES or found["tokenization"]
            found.update(self.prepare(language, found))
            self._settings[language] = found
        return found

    def prepare(self, language: str, params: dict[str, Any]) -> dict[str, Any]:
        """Per-language resources (loaded once per language and process)."""
        return {}

    def words(self, doc: Document, p: dict[str, Any]) -> list[str]:
        return words.words(doc.text, p["strip_characters"], p["_script_split"])

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        last, verdict = self._last
        if last is doc:
            return verdict
        p = self.settings(str(doc.metadata.get("language", "unknown")))
        verdict = self.check(doc, p) if p[self.cond_key] else True
        self._last = (doc, verdict)
        return verdict

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        raise NotImplementedError


class NumberWordsFilter(RootsFilter):
    ledger_name = "number_words"
    cond_key = "cond_check_number_words"

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        n = words.word_count(doc.text, p["strip_characters"], p["_script_split"])
        if n < p["number_words_min_cutoff"]:
            return False, "too_few_words"
        if n > p["number_words_max_cutoff"]:
            return False, "too_many_words"
        return True


class CharacterRepetitionFilter(RootsFilter):
    ledger_name = "character_repetition"
    cond_key = "cond_check_character_repetition_removal"

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        ratio = character_repetition_ratio(doc.text, p["character_repetition_length"])
        if ratio > p["character_repetition_max_cutoff"]:
            return False, "character_repetition"
        return True


class WordRepetitionFilter(RootsFilter):
    ledger_name = "word_repetition"
    cond_key = "cond_check_word_repetition_removal"

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        ratio = word_repetition_ratio(self.words(doc, p), p["word_repetition_length"])
        if ratio > p["word_repetition_max_cutoff"]:
            return False, "word_repetition"
        return True


class SpecialCharactersFilter(RootsFilter):
    ledger_name = "special_characters"
    cond_key = "cond_check_special_characters"

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        if (
            special_characters_ratio(doc.text, p["special_characters"])
            > p["special_characters_max_cutoff"]
        ):
            return False, "special_characters"
        return True


def _groups(p: dict[str, Any]) -> tuple[list[int], str]:
    if not p["cond_words_augmentation"]:
        return [], ""
    return list(p["words_augmentation_group_sizes"]), p["words_augmentation_join_char"]


class StopwordsFilter(RootsFilter):
    ledger_name = "stopwords"
    cond_key = "cond_check_stopwords"

    def prepare(self, language: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"_list": resources.stopwords_for(self.config.stopwords, language)}

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        if not p["_list"]:
            return True
        ratio = list_ratio(self.words(doc, p), p["_list"], *_groups(p))
        return True if ratio >= p["stopwords_min_cutoff"] else (False, "too_few_stopwords")


class FlaggedWordsFilter(RootsFilter):
    ledger_name = "flagged_words"
    cond_key = "cond_check_flagged_words"

    def prepare(self, language: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"_list": resources.flagged_words_for(self.config.flagged_words, language)}

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        if not p["_list"]:
            return True
        ratio = list_ratio(self.words(doc, p), p["_list"], *_groups(p))
        return True if ratio <= p["flagged_words_max_cutoff"] else (False, "flagged_words")


class LangIdFilter(RootsFilter):
    """Needs `language_score` from `language_id_step`; documents without one are kept."""

    ledger_name = "lang_id"
    cond_key = "cond_check_lang_id"

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        score = doc.metadata.get("language_score")
        if score is None or float(score) >= p["lang_id_min_cutoff"]:
            return True
        return False, "lang_id_score"


_UNIFORM_SPACE = re.compile(r"[^\S\n]+")


def perplexity(text: str, model: Any, tokenizer: Any = None) -> float:
    """BigScience's document perplexity: 10^(-sum log10 p / (words + one </s> per line))."""
    text = _UNIFORM_SPACE.sub(" ", text.strip())
    if tokenizer is not None:
        text = "\n".join(" ".join(tokenizer.encode_as_pieces(line)) for line in text.split("\n"))
    log_score, length = 0.0, 0
    for line in text.split("\n"):
        log_score += model.score(line)
        length += len(line.split()) + 1
    return round(10.0 ** (-log_score / length), 1)


class PerplexityFilter(RootsFilter):
    """Needs `kenlm` and a model for the language; otherwise keeps the document."""

    ledger_name = "perplexity"
    cond_key = "cond_check_perplexity"

    def prepare(self, language: str, params: dict[str, Any]) -> dict[str, Any]:
        path = self.config.kenlm_models.get(language)
        if path is None or not resources.kenlm_available():
            return {"_model": None, "_tokenizer": None}
        sp = self.config.sentencepiece_models.get(language)
        return {
            "_model": resources.kenlm_model(path),
            "_tokenizer": resources.sentencepiece_model(sp) if sp else None,
        }

    def check(self, doc: Document, p: dict[str, Any]) -> bool | tuple[bool, str]:
        if p["_model"] is None:
            return True
        score = perplexity(doc.text, p["_model"], p["_tokenizer"])
        return True if score <= p["perplexity_max_cutoff"] else (False, "perplexity")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_settings"] = {}  # KenLM models do not pickle; reloaded per process
        return state


FILTER_CLASSES: dict[str, type[RootsFilter]] = {
    cls.ledger_name: cls
    for cls in (
        NumberWordsFilter,
        CharacterRepetitionFilter,
        WordRepetitionFilter,
        SpecialCharactersFilter,
        StopwordsFilter,
        FlaggedWordsFilter,
        LangIdFilter,
        PerplexityFilter,
    )
}
