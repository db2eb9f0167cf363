"""BigScience's per-language ROOTS filter parameters, as bloomforge's defaults.

In: the bundled `parameters_filtering.json` (BigScience data-preparation, commit 9d05884,
`preprocessing/training/01b_oscar_cleaning_and_filtering/parameters_filtering.py`, values
unchanged: 13 languages + `default`) and per-language overrides from `FilterConfig.parameters`.
Out: `language_parameters(lang, overrides)`, a plain dict per language with
`<special_characters_default>` resolved, and the character sets the filters use
(`special_characters_default()`, `character_class(chars)`).

The special-character default is BigScience's: `string.punctuation + string.digits +
string.whitespace + other_special_characters` (given in the JSON) + every emoji. Their code took
the emoji from the `emoji` package's `EMOJI_DATA`; only single code points matter (the filters
look at one character at a time), and those are the code points with Unicode's `Emoji` property,
which we read from the `regex` module's Unicode tables (a datatrove dependency), so no extra
package is needed.
"""

from __future__ import annotations

import difflib
import json
import string
from functools import cache
from importlib import resources
from typing import Any

DEFAULT = "default"
SPECIAL_DEFAULT = "<special_characters_default>"
# Languages written without spaces between words: BigScience tokenized zh with sentencepiece
# (`tokenization: true`); bloomforge splits these scripts into single characters instead.
SCRIPT_SPLIT_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue", "wuu"})
_PARAMS_FILE = "parameters_filtering.json"
_MAX_CODE_POINT = 0x110000


@cache
def _bundled() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(_PARAMS_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def bigscience_parameters() -> dict[str, dict[str, Any]]:
    """The bundled per-language table, as in BigScience's file (placeholders unresolved)."""
    return {lang: dict(p) for lang, p in _bundled()["parameters"].items()}


def parameter_names() -> list[str]:
    return list(_bundled()["parameters"][DEFAULT])


@cache
def _code_points(pattern: str) -> frozenset[str]:
    """Every code point (surrogates excepted) matching a `regex` property class."""
    import regex

    every = "".join(chr(c) for c in range(_MAX_CODE_POINT) if not 0xD800 <= c < 0xE000)
    return frozenset(regex.findall(pattern, every))


def emoji_characters() -> frozenset[str]:
    return _code_points(r"\p{Emoji}")


def script_split_characters() -> frozenset[str]:
    """Characters of scripts written without word spaces (CJK ideographs and kana, Thai, ...)."""
    return _code_points(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")


@cache
def special_characters_default() -> frozenset[str]:
    main = string.punctuation + string.digits + string.whitespace
    return frozenset(main + _bundled()["other_special_characters"]) | emoji_characters()


def character_class(chars: frozenset[str] | str) -> str:
    """A regex character class body (no brackets) matching exactly `chars`, as code point ranges."""
    points = sorted({ord(c) for c in chars})
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        lo, hi = points[i], points[j]
        parts.append(_escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}")
        i = j + 1
    return "".join(parts)


def _escape(point: int) -> str:
    return f"\\U{point:08x}"


def resolve_characters(value: str) -> frozenset[str]:
    return special_characters_default() if value == SPECIAL_DEFAULT else frozenset(value)


def check_overrides(overrides: dict[str, dict[str, Any]]) -> None:
    """Raise ValueError naming `parameters.LANG.KEY` for an unknown key or a wrongly typed value."""
    names = parameter_names()
    reference = _bundled()["parameters"][DEFAULT]
    for lang, params in overrides.items():
        if not isinstance(params, dict):
            raise ValueError(f"key 'parameters.{lang}': expected mapping of parameter: value")
        for key, value in params.items():
            if key not in reference:
                near = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
                hint = f"did you mean '{near[0]}'?" if near else "see docs/data-filters.md"
                raise ValueError(f"key 'parameters.{lang}.{key}': unknown parameter ({hint})")
            expected = type(reference[key])
            ok = isinstance(value, expected) and not (
                isinstance(value, bool) and expected is not bool
            )
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if expected is int and isinstance(value, float) and key.endswith("_cutoff"):
                ok = True  # a cutoff given as 0.5 where BigScience wrote an integer
            if not ok:
                raise ValueError(
                    f"key 'parameters.{lang}.{key}': expected {expected.__name__}, "
                    f"got {type(value).__name__} {value!r}"
                )


def language_parameters(
    language: str, overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Parameters for `language`: BigScience's row (or `default`), then the user's `default`
    overrides, then the user's overrides for that language."""
    table = _bundled()["parameters"]
    overrides = overrides or {}
    params = dict(table.get(language, table[DEFAULT]))
    if language not in table:
        params.update(overrides.get(DEFAULT, {}))
    params.update(overrides.get(language, {}))
    return params
