"""`FilterConfig`: which ROOTS filters run, with which resources and per-language overrides.

In: the `filters:` section of a `data prepare` config (via `bloomforge.typed_config.from_dict`) or
keyword arguments. Out: a validated, picklable dataclass; every field has a default that runs
(BigScience's parameters, stopwordsiso stop words, no flagged-word list, no KenLM model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bloomforge.data.filters.params import check_overrides

# ROOTS order (BigScience filtering.py `Filtering.filtering`): each filter sees what the
# previous ones kept.
FILTER_NAMES = (
    "number_words",
    "character_repetition",
    "word_repetition",
    "special_characters",
    "stopwords",
    "flagged_words",
    "lang_id",
    "perplexity",
)
STOPWORDSISO = "stopwordsiso"


@dataclass
class FilterConfig:
    """Settings of the ROOTS quality filters.

    filters: names of the filters to run (ROOTS order is kept whatever the order here).
    parameters: per-language overrides of BigScience's parameters, e.g.
        `{"en": {"stopwords_min_cutoff": 0.2}, "default": {...}}`; `default` applies to languages
        without a row of their own.
    stopwords: "stopwordsiso" (the maintained per-language lists) or a JSON file
        `{lang: [word, ...]}` such as BigScience's stopwords.json.
    flagged_words: a JSON file `{lang: [word, ...]}`; without one the filter is off.
    kenlm_models: `{lang: path to a KenLM .arpa/.bin}`; perplexity is checked for these
        languages only, and only when the `kenlm` package is installed.
    sentencepiece_models: `{lang: path to a .model}` tokenizing text before KenLM scoring, as
        BigScience did (needs the `sentencepiece` package); without one, text is scored as is.
    lid_text_chars: identify the language from at most this many characters (0: whole text).
    """

    filters: list[str] = field(default_factory=lambda: list(FILTER_NAMES))
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopwords: str = STOPWORDSISO
    flagged_words: str | None = None
    kenlm_models: dict[str, str] = field(default_factory=dict)
    sentencepiece_models: dict[str, str] = field(default_factory=dict)
    lid_text_chars: int = 0

    def __post_init__(self) -> None:
        for name in self.filters:
            if name not in FILTER_NAMES:
                import difflib

                near = difflib.get_close_matches(name, FILTER_NAMES, n=1, cutoff=0.5)
                hint = f"did you mean '{near[0]}'?" if near else f"one of {', '.join(FILTER_NAMES)}"
                raise ValueError(f"key 'filters': unknown filter '{name}' ({hint})")
        check_overrides(self.parameters)
        if self.lid_text_chars < 0:
            raise ValueError("key 'lid_text_chars': must be >= 0")
