"""Word lists and models the ROOTS filters need, loaded lazily once per process.

In: `FilterConfig` resource settings (stopwordsiso or a JSON list file, a flagged-word JSON file,
KenLM / sentencepiece model paths). Out: per-language frozensets (`stopwords_for`,
`flagged_words_for`, None where a language has no list), KenLM models, and `disabled_filters`,
which says which filters cannot run and why (for the data card).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any

from bloomforge.data.filters.config import FILTER_NAMES, STOPWORDSISO, FilterConfig
from bloomforge.errors import BloomforgeError


def check_list_file(path: str, what: str) -> None:
    """Fail early, naming the file, if a word-list file is missing or not `{lang: [words]}`."""
    _load_lists(path, what)


@cache
def _load_lists(path: str, what: str) -> dict[str, frozenset[str]]:
    file = Path(path)
    if not file.is_file():
        raise BloomforgeError(f"{path}: {what} file not found")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BloomforgeError(f"{path}: not a JSON {what} file ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(w, str) for w in v) for v in data.values()
    ):
        raise BloomforgeError(f"{path}: expected a mapping {{language: [word, ...]}}")
    return {lang: frozenset(words) for lang, words in data.items()}


@cache
def _stopwordsiso(language: str) -> frozenset[str] | None:
    import stopwordsiso

    if not stopwordsiso.has_lang(language):
        return None
    return frozenset(stopwordsiso.stopwords(language))


def stopwords_for(source: str, language: str) -> frozenset[str] | None:
    """Stop words of `language` from stopwordsiso or a list file; None: none known (no check)."""
    if source == STOPWORDSISO:
        return _stopwordsiso(language)
    return _load_lists(source, "stop-word").get(language) or None


def flagged_words_for(path: str | None, language: str) -> frozenset[str] | None:
    if path is None:
        return None
    return _load_lists(path, "flagged-word").get(language) or None


def kenlm_available() -> bool:
    return importlib.util.find_spec("kenlm") is not None


@cache
def kenlm_model(path: str) -> Any:
    import kenlm

    if not Path(path).exists():
        raise BloomforgeError(f"{path}: KenLM model not found")
    return kenlm.Model(path)


@cache
def sentencepiece_model(path: str) -> Any:
    import sentencepiece

    if not Path(path).exists():
        raise BloomforgeError(f"{path}: sentencepiece model not found")
    return sentencepiece.SentencePieceProcessor(model_file=path)


def disabled_filters(config: FilterConfig) -> dict[str, str]:
    """Filters that will not run, each with the reason (shown in the data card)."""
    off = {n: "switched off in the config" for n in FILTER_NAMES if n not in config.filters}
    if "flagged_words" not in off and config.flagged_words is None:
        off["flagged_words"] = (
            "no flagged-word list given (filters.flagged_words: a JSON {language: [words]} file)"
        )
    if "perplexity" not in off:
        if not config.kenlm_models:
            off["perplexity"] = "no KenLM model given (filters.kenlm_models: {language: path})"
        elif not kenlm_available():
            off["perplexity"] = "the kenlm package is not installed (pip install kenlm)"
    return off
