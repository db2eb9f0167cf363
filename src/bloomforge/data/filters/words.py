"""Language-aware word splitting for the ROOTS filters, computed once per document.

In: a document's text, the strip characters of its language and whether its language is written
without spaces. Out: `words(text, strip, script_split)` (lower-cased words, BigScience's
`get_words_from_document(lower_case=True)`) and `word_count(...)` (the same with
`lower_case=False`, as `check_number_words` used).

BigScience split on spaces, newlines and tabs (after mapping every Unicode space to " "), lower-
cased, stripped the special characters from both ends of each word and dropped empty words. One
regex does all of it here: a word starts and ends with a character that is neither a space nor a
strip character, with anything but a space in between. For scripts written without spaces (zh,
ja, th, ...; BigScience used a sentencepiece model for zh) every Han, kana, Thai, Lao, Khmer or
Myanmar character is a word on its own, and the other runs are split as above. No model, nothing
downloaded.

The filters of one document run back to back in one process (datatrove steps are chained
generators), so the words of the last document are kept in a one-document cache, keyed by the
identity of the text string: the split is done once and shared by every filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any

from bloomforge.data.filters.params import (
    SPECIAL_DEFAULT,
    character_class,
    resolve_characters,
    script_split_characters,
)

# Where lower-casing could change which characters are stripped (e.g. "Ø" is not a special
# character but "ø" is), the unlowered count is recomputed; the last cased code point is U+1E943.
_CASED_LIMIT = 0x1F000


@cache
def _patterns(strip: str, script_split: bool) -> tuple[re.Pattern[str], re.Pattern[str] | None]:
    special = resolve_characters(strip)
    s = character_class(special)
    if script_split:
        script = script_split_characters()
        c_all = character_class(script)
        c_word = character_class(script - special)
        word = rf"[{c_word}]|[^\s{s}{c_all}](?:[^\s{c_all}]*[^\s{s}{c_all}])?"
    else:
        script = frozenset()
        word = rf"[^\s{s}](?:\S*[^\s{s}])?"
    case_sensitive = set()
    for point in range(_CASED_LIMIT):
        char = chr(point)
        lower = char.lower()
        if lower != char and any(
            (c in special) != (char in special) or (c in script) != (char in script) for c in lower
        ):
            case_sensitive.add(char)
    sensitive = re.compile(f"[{character_class(case_sensitive)}]") if case_sensitive else None
    return re.compile(word), sensitive


def split_words(text: str, strip: str = SPECIAL_DEFAULT, script_split: bool = False) -> list[str]:
    """Words of `text` as BigScience's `get_words_from_document(lower_case=False)` (uncached)."""
    return _patterns(strip, script_split)[0].findall(text)


_last_text: str | None = None
_last: dict[Any, Any] = {}


def _memo(text: str, key: Any, compute: Callable[[], Any]) -> Any:
    """Value of `compute()` for `key` on `text`, cached for the last text seen (by identity)."""
    global _last_text, _last
    if text is not _last_text:
        _last_text, _last = text, {}
    if key not in _last:
        _last[key] = compute()
    return _last[key]


def words(text: str, strip: str = SPECIAL_DEFAULT, script_split: bool = False) -> list[str]:
    """Lower-cased words (stop words, flagged words, word repetition); cached per document."""
    pattern = _patterns(strip, script_split)[0]
    return _memo(text, ("lower", strip, script_split), lambda: pattern.findall(text.lower()))


def word_count(text: str, strip: str = SPECIAL_DEFAULT, script_split: bool = False) -> int:
    """Number of words as cased (BigScience's word-count check did not lower-case)."""

    def count() -> int:
        pattern, sensitive = _patterns(strip, script_split)
        if sensitive is not None and sensitive.search(text):
            return len(pattern.findall(text))
        return len(words(text, strip, script_split))

    return _memo(text, ("count", strip, script_split), count)
