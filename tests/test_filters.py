"""ROOTS filters and language id: hand-computed ratios, BigScience's parameters, UD text, fuzzing,
and a ledger that adds up through datatrove's local executor."""

from __future__ import annotations

import functools
import json
import math
import pickle
import string
from collections import Counter
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from hypothesis import given, settings
from hypothesis import strategies as st

from bloomforge.data.filters import (
    FILTER_NAMES,
    FilterConfig,
    bigscience_parameters,
    disabled_filters,
    filter_steps,
    identify,
    language_id_step,
    language_parameters,
)
from bloomforge.data.filters.params import special_characters_default
from bloomforge.data.filters.quality import (
    FILTER_CLASSES,
    character_repetition_ratio,
    list_ratio,
    perplexity,
    special_characters_ratio,
    word_repetition_ratio,
)
from bloomforge.data.filters.words import split_words, word_count, words
from bloomforge.data.ledger import IN, KEPT, read_ledger
from bloomforge.typed_config import ConfigError, from_dict

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def doc(text: str, language: str = "xx", **meta: object) -> Document:
    return Document(text=text, id="d", metadata={"source": "s", "language": language, **meta})


def run_filter(
    name: str, text: str, language: str = "xx", config: FilterConfig | None = None, **meta: object
) -> bool | tuple[bool, str]:
    return FILTER_CLASSES[name](config or FilterConfig()).filter(doc(text, language, **meta))


# ---- parameters -----------------------------------------------------------------------------


# The issue's check table: min words, char rep (n, max), word rep (n, max), special max,
# stop words min, flagged max, LID min, perplexity max.
ISSUE_TABLE = {
    "default": (10, 10, 0.20, 5, 0.30, 0.40, 0.10, 0.10, 0.70, 10000),
    "en": (20, 10, 0.106, 5, 0.19, 0.40, 0.30, 0.01, 0.80, 1500),
    "fr": (13, 10, 0.14, 5, 0.13, 0.34, 0.27, 0.008, 0.80, 1770),
    "zh": (1, 3, 0.20, 5, 0.96, 0.30, 0.1691, 0.001, 0.85, 2095),
}
KEYS = (
    "number_words_min_cutoff",
    "character_repetition_length",
    "character_repetition_max_cutoff",
    "word_repetition_length",
    "word_repetition_max_cutoff",
    "special_characters_max_cutoff",
    "stopwords_min_cutoff",
    "flagged_words_max_cutoff",
    "lang_id_min_cutoff",
    "perplexity_max_cutoff",
)


@pytest.mark.parametrize("lang", sorted(ISSUE_TABLE))
def test_parameters_are_bigscience(lang):
    params = language_parameters(lang)
    assert tuple(params[k] for k in KEYS) == ISSUE_TABLE[lang]
    shared = SHARED / "filters" / "parameters_filtering.json"
    if shared.exists():
        assert bigscience_parameters() == json.loads(shared.read_text())["parameters"]


def test_unknown_language_uses_default_and_overrides_apply():
    assert language_parameters("sw") == language_parameters("default")
    over = {"default": {"stopwords_min_cutoff": 0.5}, "en": {"number_words_min_cutoff": 3}}
    assert language_parameters("sw", over)["stopwords_min_cutoff"] == 0.5
    assert language_parameters("en", over)["stopwords_min_cutoff"] == 0.3  # en has its own row
    assert language_parameters("en", over)["number_words_min_cutoff"] == 3


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"parameters\.en\.stopwords_min.*_cutoff"):
        from_dict(FilterConfig, {"parameters": {"en": {"stopwords_min": 0.2}}}, "filters")
    with pytest.raises(ConfigError, match="did you mean 'stopwords'"):
        from_dict(FilterConfig, {"filters": ["stopword"]}, "filters")
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(FilterConfig, {"parameters": {"fr": {"stopwords_min_cutoff": "x"}}})


def test_special_characters_default():
    chars = special_characters_default()
    for c in string.punctuation + string.digits + string.whitespace + "…«»€😀🎉©™➤":
        assert c in chars, c
    for c in "aZéß中ñ":
        assert c not in chars, c


# ---- word splitting -------------------------------------------------------------------------


def bigscience_words(text: str, lower: bool) -> list[str]:
    """BigScience's get_words_from_document, written out (whitespace split, strip, drop empty)."""
    special = special_characters_default()
    out = []
    for w in text.split():
        w = w.lower() if lower else w
        i, j = 0, len(w)
        while i < j and w[i] in special:
            i += 1
        while j > i and w[j - 1] in special:
            j -= 1
        if i < j:
            out.append(w[i:j])
    return out


def test_words_as_bigscience():
    assert split_words("Hello, world! (foo) -- x.y 😀 l'été") == [
        "Hello",
        "world",
        "foo",
        "x.y",
        "l'été",
    ]
    ud = SHARED / "ud"
    if not ud.is_dir():
        pytest.skip("no shared UD text")
    for lang in ("en", "fr", "eu", "vi"):
        for line in (ud / f"{lang}.txt").read_text().splitlines()[:200]:
            assert words(line) == bigscience_words(line, lower=True), line
            assert word_count(line) == len(bigscience_words(line, lower=False)), line
    # "Ø" is not special but "ø" is: the cased count keeps the word, the lowered words drop it
    assert word_count("Ø ab") == 2 and words("Ø ab") == ["ab"]


def test_words_for_unspaced_scripts():
    # each Han/kana/Thai character is a word; "。" and "ー" are special characters
    assert split_words("我们是中国人。", script_split=True) == list("我们是中国人")
    assert split_words("東京タワー ok", script_split=True) == ["東", "京", "タ", "ワ", "ok"]
    assert split_words("ภาษาไทย", script_split=True) == list("ภาษาไทย")
    assert split_words("我们是中国人。") == ["我们是中国人"]  # whitespace-split languages


# ---- each filter, by reason -----------------------------------------------------------------


def test_number_words():
    assert run_filter("number_words", "one two three") == (False, "too_few_words")  # 3 < 10
    assert run_filter("number_words", " ".join(["w,"] * 10)) is True  # 10 words after strip
    assert run_filter("number_words", "... -- 😀 !!") == (False, "too_few_words")  # 0 words
    cfg = FilterConfig(parameters={"default": {"number_words_max_cutoff": 12}})
    assert run_filter("number_words", " ".join(["w"] * 13), config=cfg) == (False, "too_many_words")
    assert run_filter("number_words", "我们是中国人", "zh") is True  # 6 words >= 1


def test_character_repetition_ratio_by_hand():
    # "aaaaa", n=2: "aa" x4; distinct 1, k = min(isqrt(1), 1 - 0) = 1 -> 4/4
    assert character_repetition_ratio("aaaaa", 2) == 1.0
    # "abcab", n=2: ab:2 bc:1 ca:1; k = min(isqrt(3)=1, 3 - 2) = 1 -> 2/4
    assert character_repetition_ratio("abcab", 2) == 0.5
    # all n-grams distinct: k = min(2, 0) = 0
    assert character_repetition_ratio("abcdef", 2) == 0.0
    assert character_repetition_ratio("abc", 10) == 0.0
    # "ab"*1000, n=10: 1991 n-grams, "abab..." at the 996 even starts, "baba..." at 995 odd;
    # distinct 2, k = min(1, 2) = 1 -> 996/1991 (the numpy path)
    assert character_repetition_ratio("ab" * 1000, 10) == 996 / 1991


def reference_char_ratio(text: str, n: int) -> float:
    """BigScience's compute_character_repetition_ratio, written out."""
    freq = sorted(Counter(text[i : i + n] for i in range(len(text) - n + 1)).values(), reverse=True)
    if not freq:
        return 0
    ones = sum(1 for f in freq if f == 1)
    k = min(int(math.sqrt(len(freq))), len(freq) - ones)
    return sum(freq[:k]) / sum(freq)


def test_character_repetition_matches_reference_on_web_text():
    web = sorted((SHARED / "web").glob("*.jsonl.gz"))
    if not web:
        pytest.skip("no shared web text")
    import gzip

    with gzip.open(web[0], "rt") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(60), strict=False)]
    texts += ["😀é中" * 300 + "x" * 50, "a\u05d0b\u05d1" * 200]
    for text in texts:
        for n in (3, 5, 10):
            assert character_repetition_ratio(text, n) == pytest.approx(
                reference_char_ratio(text, n), abs=1e-12
            )


def test_character_repetition_filter():
    assert run_filter("character_repetition", "ab" * 1000) == (False, "character_repetition")
    assert run_filter("character_repetition", "the quick brown fox jumps over the lazy dog") is True


def test_word_repetition():
    # bigrams ab bc ca ab bc cd: ab, bc twice -> 4 of 6 occurrences repeated
    assert word_repetition_ratio(list("abcabcd"), 2) == pytest.approx(4 / 6)
    assert word_repetition_ratio(["a"], 5) == 0.0
    # 10 words, 5-grams at 0..5: the first and last are equal -> 2/6 = 0.333 > 0.30 (default)
    text = "ab bc cd de ef Ab bc cd de ef."  # lower-cased and stripped: Ab = ab, ef. = ef
    assert run_filter("word_repetition", text) == (False, "word_repetition")
    assert run_filter("word_repetition", "ab bc cd de ef fg bc cd de ef") is True  # 0/6
    # digits are special characters: "w1 w2 ..." is the word "w" ten times -> 6/6
    assert run_filter("word_repetition", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w0") == (
        False,
        "word_repetition",
    )


def test_special_characters():
    assert special_characters_ratio("abc!", string.punctuation) == 0.25
    # "ab😀😀": 2 of 4 code points are emoji (special) -> 0.5 > 0.40 (default)
    assert run_filter("special_characters", "ab😀😀") == (False, "special_characters")
    assert run_filter("special_characters", "ab12 cd") == (False, "special_characters")  # 3/7
    assert run_filter("special_characters", "abc!") is True  # 1/4
    assert special_characters_ratio("", string.punctuation) == 0.0


def test_stopwords(tmp_path):
    lists = tmp_path / "stop.json"
    lists.write_text(json.dumps({"en": ["the", "a"], "zh": ["我们"]}))
    cfg = FilterConfig(stopwords=str(lists))
    # the, a in [the cat sat on a mat]: 2/6 = 0.333 >= 0.30 (en)
    assert run_filter("stopwords", "The cat sat on a mat.", "en", cfg) is True
    # the x2 in 10 words: 0.2 < 0.30
    text = "The cat sat on the big red mat ok fine"
    assert run_filter("stopwords", text, "en", cfg) == (False, "too_few_stopwords")
    # zh: words 我 们 是 人 + pairs 我们 们是 是人 (augmentation 2, ""): 1/4 = 0.25 >= 0.1691
    assert run_filter("stopwords", "我们是人", "zh", cfg) is True
    assert run_filter("stopwords", "他是人", "zh", cfg) == (False, "too_few_stopwords")  # 0/3
    assert run_filter("stopwords", "no list for this language", "fr", cfg) is True
    # default: stopwordsiso; "the" is an English stop word there
    assert run_filter("stopwords", "the the the dog", "en") is True
    assert list_ratio(["a", "b"], frozenset({"a", "a b"}), [2], " ") == 1.0  # (1 + 1)/2, capped


def test_flagged_words_and_disabled(tmp_path):
    assert "flagged_words" in disabled_filters(FilterConfig())
    assert "flagged_words" not in [s.ledger_name for s in filter_steps(FilterConfig())]
    lists = tmp_path / "flagged.json"
    lists.write_text(json.dumps({"en": ["badword"]}))
    cfg = FilterConfig(flagged_words=str(lists))
    assert "flagged_words" not in disabled_filters(cfg)
    clean = ["word"] * 98
    # 1 flagged in 100 words = 0.01 <= 0.01 (en) kept; 2 = 0.02 removed
    assert run_filter("flagged_words", " ".join([*clean, "badword", "w"]), "en", cfg) is True
    two = " ".join([*clean, "Badword!", "badword"])
    assert run_filter("flagged_words", two, "en", cfg) == (False, "flagged_words")


def test_lang_id_and_perplexity():
    assert run_filter("lang_id", "x", "en", language_score=0.79) == (False, "lang_id_score")
    assert run_filter("lang_id", "x", "en", language_score=0.8) is True
    assert run_filter("lang_id", "x", "en") is True  # no score: nothing to judge
    assert "perplexity" in disabled_filters(FilterConfig())
    with_model = disabled_filters(FilterConfig(kenlm_models={"en": "en.arpa"}))
    assert "perplexity" not in with_model or "kenlm" in with_model["perplexity"]

    class LogProbs:  # log10 probabilities per line, as kenlm.Model.score returns
        def score(self, line: str) -> float:
            return {"a b": -2.0, "c": -1.0}[line]

    # (-2 - 1) over (2 + 1) + (1 + 1) tokens: 10^(3/5) = 3.98 -> 4.0
    assert perplexity("a  b\nc", LogProbs()) == 4.0


def test_bad_list_file_is_one_line_error(tmp_path):
    from bloomforge.errors import BloomforgeError

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BloomforgeError, match=r"bad\.json"):
        filter_steps(FilterConfig(flagged_words=str(bad)))
    with pytest.raises(BloomforgeError, match="not found"):
        filter_steps(FilterConfig(stopwords=str(tmp_path / "missing.json")))


# ---- language identification ---------------------------------------------------------------


@functools.cache
def reference_lid():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def test_language_id_on_ud():
    ud = SHARED / "ud"
    if not ud.is_dir():
        pytest.skip("no shared UD text")
    for lang in ("en", "fr", "es", "pt", "ca", "eu", "id", "vi", "zh"):
        lines = (ud / f"{lang}.txt").read_text().splitlines()[:100]
        paragraphs = [" ".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]
        found = [identify(p)[0] for p in paragraphs]
        assert sum(f == lang for f in found) >= 0.9 * len(found), (lang, Counter(found))
        # the same scores, bit for bit, as py3langid itself (bloomforge vectorises its byte walk
        # and keeps float32 weights)
        for p in paragraphs[:5]:
            assert identify(p) == reference_lid().classify(p)
            assert identify(p, "es")[1] == dict(reference_lid().rank(p))["es"]
    english = " ".join((ud / "en.txt").read_text().splitlines()[:5])
    assert identify(english, "en")[1] > 0.8
    assert identify(english, "fr")[1] < 0.5
    assert identify(english, "und") == ("und", None)


def test_language_id_step_sets_metadata_and_pickles():
    step = language_id_step(FilterConfig(), "auto")
    out = list(
        step.run(iter([doc("Le chat est sur la table et il dort depuis ce matin.", "auto")]))
    )
    assert out[0].metadata["language"] == "fr"
    assert 0.5 < out[0].metadata["language_score"] <= 1.0
    fixed = language_id_step(FilterConfig(), "en")
    out = list(fixed.run(iter([doc("Le chat est sur la table et il dort.", "en")])))
    assert out[0].metadata["language"] == "en" and out[0].metadata["language_score"] < 0.5
    pickle.loads(pickle.dumps([step, *filter_steps(FilterConfig())]))


# ---- fuzz ----------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300) | st.lists(
    st.sampled_from(
        ["😀", "👩‍👩‍👧", "שלום", "مرحبا", "中文", "ไทย", " ", "\n", "the", "!", "\u200b"]
    ),
    max_size=60,
).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=TEXT, language=st.sampled_from(["en", "zh", "th", "fr", "xx", "unknown", "auto"]))
def test_fuzz_every_filter(text, language):
    cfg = FilterConfig(parameters={"default": {"character_repetition_length": 2}})
    for name in FILTER_NAMES:
        result = FILTER_CLASSES[name](cfg).filter(doc(text, language, language_score=0.5))
        assert result is True or (result[0] is False and result[1])
    for split in (False, True):
        for w in split_words(text, script_split=split):
            assert w and not any(c.isspace() for c in w)
    label, score = identify(text)
    assert 0.0 <= score <= 1.0 and label
    assert (label, score) == reference_lid().classify(text)


# ---- ledger through datatrove's executor ---------------------------------------------------


def _reader(data, rank: int = 0, world_size: int = 1):
    texts = [
        "The committee met on Tuesday to discuss the budget for the next year and agreed on "
        "most of the points that had been raised by the members of the board last month.",
        "short one",
        "buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy buy",
        "Le conseil municipal s'est réuni mardi pour discuter du budget de l'année prochaine.",
        "!!!! ???? #### 1234 5678 ---- **** //// :::: ;;;; ,,,, .... ____ ==== ++++ %%%% @@@@",
        "",
    ]
    for i, text in enumerate(texts):
        if i % world_size == rank:
            yield Document(text=text, id=str(i), metadata={"source": "web", "language": "auto"})


def test_ledger_adds_up_through_executor(tmp_path):
    cfg = FilterConfig()
    pipeline = [_reader, language_id_step(cfg, "auto"), *filter_steps(cfg)]
    LocalPipelineExecutor(
        pipeline=pipeline, tasks=2, workers=1, logging_dir=str(tmp_path / "logs")
    ).run()
    rows = read_ledger(tmp_path / "logs")
    steps = [s.ledger_name for s in filter_steps(cfg)]
    totals: dict[str, Counter] = {s: Counter() for s in steps}
    byte_totals: dict[str, Counter] = {s: Counter() for s in steps}
    for r in rows:
        totals[r.step][r.outcome] += r.documents
        byte_totals[r.step][r.outcome] += r.bytes
    assert totals[steps[0]][IN] == 6
    for i, step in enumerate(steps):
        removed = sum(v for k, v in totals[step].items() if k not in (IN, KEPT))
        assert totals[step][IN] == totals[step][KEPT] + removed
        removed_b = sum(v for k, v in byte_totals[step].items() if k not in (IN, KEPT))
        assert byte_totals[step][IN] == byte_totals[step][KEPT] + removed_b
        if i:
            assert totals[step][IN] == totals[steps[i - 1]][KEPT]
    assert totals["number_words"]["too_few_words"] >= 2  # "short one", ""
    assert (
        totals["word_repetition"]["word_repetition"]
        + totals["character_repetition"]["character_repetition"]
        >= 1
    )  # "buy buy ..."


def test_each_filter_alone_counts_every_filter_that_would_reject():
    """A document failing two filters counts for both (the chain removes it at the first)."""
    from bloomforge.data.filters import EachFilterAlone

    chain = filter_steps(FilterConfig(filters=["number_words", "word_repetition"]))
    short = "un deux"  # 2 words < fr's minimum of 13; no 5-gram at all: number_words only
    loop = " ".join(["le chat le chat le chat le chat le chat"] * 4)  # 40 words
    # loop: every 5-gram occurs more than once, ratio 1 > fr's 0.13: word_repetition only
    both = "a b c d e a b c d e a b"  # 12 words < 13, and 6 of its 8 5-grams repeat (0.75)
    docs = [
        Document(text=t, id=str(i), metadata={"source": "s", "language": "fr"})
        for i, t in enumerate([short, loop, both])
    ]
    step = EachFilterAlone(chain)
    assert [d.text for d in step.run(iter(docs))] == [short, loop, both]  # removes nothing
    stats = step.stats.stats.items()
    counts = {k.split("|")[3]: v.total for k, v in stats if k.startswith("alone|")}
    assert counts == {"_documents": 3, "number_words": 2, "word_repetition": 2}
