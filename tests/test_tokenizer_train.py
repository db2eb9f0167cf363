"""`tokenizer train`: BLOOM's configuration, lossless round trips, α-sampling, caps, CLI errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, pre_tokenizers

from bloomforge.cli import main
from bloomforge.documents.inputs import parse_inputs
from bloomforge.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_on_texts, train_tokenizer
from bloomforge.tokenizer.sampling import count_languages, plan_sampling, sample_documents

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPUS = DATA / "corpus"
LANGS = ("ca", "en", "es", "eu", "fr", "id", "pt", "vi", "zh")

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason="shared/data not found")


def _corpus_specs(langs=LANGS):
    return parse_inputs([str(CORPUS / f"{lang}.txt") for lang in langs])


def _natural_bytes(lang: str) -> int:
    """Independent count: UTF-8 bytes of the non-blank lines of corpus/<lang>.txt."""
    lines = (CORPUS / f"{lang}.txt").read_bytes().split(b"\n")
    return sum(len(line.rstrip(b"\r")) for line in lines if line.strip())


@pytest.fixture(scope="module")
def trained():
    return train_tokenizer(_corpus_specs(), vocab_size=1000, max_bytes_per_language=200_000)


def test_special_tokens_vocab_size_and_all_bytes(trained):
    tok = trained.tokenizer
    assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert tok.get_vocab_size() == 1000
    vocab = tok.get_vocab()
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(vocab)  # no byte is unknown


def test_configuration_is_blooms(trained):
    # bigscience/tokenizer tokenizer.json, as published: no normalizer, Split(isolated) on this
    # regex, then ByteLevel without prefix space or regex; ByteLevel decoder.
    cfg = json.loads(trained.tokenizer.to_str())
    assert cfg["normalizer"] is None
    split, byte_level = cfg["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"] == {"Regex": " ?[^(\\s|[.,!?…。，、।۔،])]+"}
    assert (split["behavior"], split["invert"]) == ("Isolated", False)
    assert (byte_level["type"], byte_level["add_prefix_space"]) == ("ByteLevel", False)
    assert byte_level["use_regex"] is False
    assert cfg["decoder"]["type"] == "ByteLevel"
    assert cfg["model"]["type"] == "BPE"


def _shared_lines() -> list[str]:
    files = [
        p
        for sub in ("ud", "ud_pud", "corpus")
        for p in sorted((DATA / sub).rglob("*"))
        if p.is_file() and not p.name.endswith(".md")
    ]
    assert len(files) > 250  # ud, ud_pud, corpus, tatoeba (224), xquad_contexts (12)
    lines = []
    for f in files:
        lines.extend(f.read_bytes().decode("utf-8").split("\n"))
    return lines


def _assert_round_trip(tok: Tokenizer, texts: list[str]) -> None:
    enc = tok.encode_batch_fast(texts, add_special_tokens=False)
    dec = tok.decode_batch([e.ids for e in enc], skip_special_tokens=False)
    bad = [(t, d) for t, d in zip(texts, dec, strict=True) if t.encode() != d.encode()]
    assert not bad, f"{len(bad)} lines differ, first: {bad[0]!r}"


def test_round_trip_every_line_of_shared_data(trained):
    lines = _shared_lines()
    assert len(lines) > 200_000
    _assert_round_trip(trained.tokenizer, lines)


ODD = [
    "def f(x):\n\tif x:\n\t\treturn  x    # two spaces\n\n\n        \t \n",
    " leading space, trailing spaces   ",
    "\r\n windows \r\n line ends \r",
    " " * 100 + "\t" * 40 + "\n" * 30,
    "emoji 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 🇫🇷",
    "RTL: שָׁלוֹם עולם, مرحبا بالعالم ‏ (RLM) ‎(LRM)",
    "combining: e\u0301 a\u0300\u0323 lone \u0301\u0302 at start",
    "\ufeffBOM, ZWJ a\u200db, ZWNJ \u200c, ZWSP \u200b, word joiner \u2060",
    "private use \ue000\uf8ff \U000f0000, noncharacters \ufffe\uffff \ufdd0 \U0010fffe",
    "CJK ext B/G: 𠀀𪚥 𰀀, Hangul jamo ᄀ\u1161, Devanagari क्षि",
    "\x00 NUL \x01 \x7f DEL \x1b[31m ANSI",
    "specials as text: <unk> <s> </s> <pad>",
]


def test_round_trip_code_and_odd_unicode(trained):
    _assert_round_trip(trained.tokenizer, ODD)


def test_whitespace_runs_are_kept_and_learned():
    # Trained on Python source (indentation), BPE learns pure-whitespace tokens, as BLOOM's
    # pre-tokenizer meant it to for code, and they still round trip.
    src = Path(__file__).resolve().parents[1] / "src" / "bloomforge"
    texts = [p.read_text() for p in sorted(src.rglob("*.py"))]
    tok = train_on_texts(texts, vocab_size=400)
    whitespace = {"Ġ", "ĉ", "Ċ"}  # ByteLevel's images of space, tab, newline
    learned = [t for t in tok.get_vocab() if len(t) >= 4 and set(t) <= whitespace]
    assert learned, "no multi-space token learned from indented code"
    _assert_round_trip(tok, texts + ODD)


def test_language_counts_match_an_independent_count():
    shares = count_languages(_corpus_specs(("fr", "zh")))
    assert {k: v.bytes_available for k, v in shares.items()} == {
        lang: _natural_bytes(lang) for lang in ("fr", "zh")
    }


def _realised(alpha: float, cap: int = 10**9, langs=LANGS, seed: int = 1):
    specs = _corpus_specs(langs)
    plan = plan_sampling(count_languages(specs), alpha, cap, seed=seed)
    for _ in sample_documents(specs, plan):
        pass
    used = sum(s.bytes_used for s in plan.languages.values())
    return plan, {k: s.bytes_used / used for k, s in plan.languages.items()}


@pytest.mark.parametrize("alpha", [0.3, 0.0])
def test_alpha_sampling_matches_hand_computed_shares(alpha):
    n = {lang: _natural_bytes(lang) for lang in LANGS}
    z = sum(v**alpha for v in n.values())
    expected = {lang: n[lang] ** alpha / z for lang in LANGS}
    plan, shares = _realised(alpha)
    for lang in LANGS:
        assert plan.languages[lang].probability == pytest.approx(expected[lang], rel=1e-12)
        assert shares[lang] == pytest.approx(expected[lang], rel=0.05), lang
    if alpha == 0.0:
        assert max(shares.values()) - min(shares.values()) < 0.01  # uniform: 1/9 each


def test_alpha_one_keeps_natural_data():
    plan, _ = _realised(1.0)
    for lang, share in plan.languages.items():
        assert share.bytes_used == _natural_bytes(lang), lang
        assert share.documents_used == share.documents_available


def test_sampling_is_deterministic_per_seed():
    def used(seed):
        plan, _ = _realised(0.3, langs=("fr", "zh"), seed=seed)
        return {k: (s.bytes_used, s.documents_used) for k, s in plan.languages.items()}

    assert used(7) == used(7)
    assert used(7) != used(8)


def test_byte_cap_is_honoured_and_keeps_proportions():
    cap = 60_000
    n = {lang: _natural_bytes(lang) for lang in LANGS}
    z = sum(v**0.3 for v in n.values())
    plan, shares = _realised(0.3, cap)
    for lang, share in plan.languages.items():
        assert share.bytes_used <= cap
        assert shares[lang] == pytest.approx(n[lang] ** 0.3 / z, rel=0.08), lang
    top = max(plan.languages.values(), key=lambda s: s.probability)
    assert top.bytes_used > 0.9 * cap  # the cap binds the largest language, not far below


def test_cli_writes_tokenizer_and_sampling(tmp_path, capsys):
    # A `data prepare`-style record (datatrove jsonl, language in metadata), gzipped, plus two
    # bad records that must be counted and skipped.
    bad = tmp_path / "prepared.jsonl.gz"
    good = [
        json.dumps({"text": t, "id": str(i), "metadata": {"language": "fr", "source": "x"}})
        for i, t in enumerate(("Bonjour le monde.", "Ça va ?"))
    ]
    bad.write_bytes(gzip.compress(("\n".join([*good, "{not json", '{"txt": 1}']) + "\n").encode()))
    out = tmp_path / "tok"
    rc = main(
        [
            "tokenizer",
            "train",
            "--input",
            str(bad),
            f"en={CORPUS / 'en.txt'}",
            "--vocab-size",
            "300",
            "--max-bytes-per-language",
            "20000",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped 2 (1 bad JSON, 1 missing text key 'text')" in printed
    tok = load_tokenizer(out)
    assert tok.get_vocab_size() == 300
    sampling = json.loads((out / "sampling.json").read_text())
    assert set(sampling["languages"]) == {"en", "fr"}
    fr_bytes = len("Bonjour le monde.Ça va ?".encode())
    assert sampling["languages"]["fr"]["bytes_available"] == fr_bytes
    assert sampling["languages"]["en"]["bytes_used"] <= 20000
    assert sampling["read"]["skipped"] == {"bad JSON": 1, "missing text key 'text'": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vocab-size", "259"], "--vocab-size 259: must be at least 260"),
        (["--input", "/nonexistent/fr.txt"], "/nonexistent/fr.txt: no such file"),
        (["--input", "EMPTY"], "hold no documents"),
        (["--alpha", "-1"], "--alpha -1.0: must be >= 0"),
    ],
)
def test_cli_bad_input_one_line_error(tmp_path, capsys, args, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    base = ["tokenizer", "train", "--out", str(tmp_path / "tok")]
    if "--input" not in args:
        base += ["--input", str(CORPUS / "zh.txt")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bloomforge: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "tok").exists()


def test_cli_min_frequency_stops_merges_of_rare_pairs(tmp_path, capsys):
    """--min-frequency (the recipe's tokenizer.min_frequency): a pair seen fewer times is never
    merged, so on the same 20 kB a high threshold reaches a smaller vocabulary."""
    sizes = {}
    for freq in (2, 40):
        out = tmp_path / f"f{freq}"
        argv = ["tokenizer", "train", "--input", f"en={CORPUS / 'en.txt'}"]
        argv += ["--vocab-size", "3000", "--max-bytes-per-language", "20000"]
        assert main([*argv, "--min-frequency", str(freq), "--out", str(out)]) == 0
        sizes[freq] = load_tokenizer(out).get_vocab_size()
    assert sizes[40] < sizes[2] <= 3000
