"""`tokenizer fertility`: word counts from treebank .words files, ratios against references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from bloomforge.cli import main
from bloomforge.documents.inputs import parse_inputs
from bloomforge.tokenizer import (
    fertility_table,
    load_eval_texts,
    save_trained,
    train_on_texts,
    train_tokenizer,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPUS, UD = DATA / "corpus", DATA / "ud"
NEOX = DATA / "tokenizers" / "gpt-neox-20b-pii" / "tokenizer.json"

pytestmark = pytest.mark.skipif(not UD.is_dir(), reason="shared/data not found")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    specs = parse_inputs([str(CORPUS / f"{lang}.txt") for lang in ("en", "fr", "zh", "vi")])
    result = train_tokenizer(specs, vocab_size=600, max_bytes_per_language=100_000)
    return save_trained(tmp_path_factory.mktemp("tok") / "tok", result, 600)


def _head(src: Path, dst: Path, n: int) -> None:
    dst.write_bytes(b"".join(src.read_bytes().splitlines(keepends=True)[:n]))


def test_words_come_from_the_treebank_segmentation(tmp_path):
    # Hand counts (README: words separated by single spaces, U+00A0 inside a Vietnamese word):
    # vi 1 "Thanh bắt_chuyện với Hùng và nói : " Tôi trông ông quen_quen ? " ." = 15 words,
    # vi 2 "Hùng giật_mình : " Sao tôi không biết ông nhỉ ? " ." = 13 words;
    # zh 1 "然而 ， 这样 的 处理 也 衍生 了 一些 问题 。" = 11 words (whitespace would say 1);
    # en 1 "What if Google Morphed Into GoogleOS?" has no .words here: 6 whitespace words.
    for name, n in (("vi.txt", 2), ("vi.words", 2), ("zh.txt", 1), ("zh.words", 1), ("en.txt", 1)):
        _head(UD / name, tmp_path / name, n)
    texts = load_eval_texts(parse_inputs([str(tmp_path / f"{x}.txt") for x in ("vi", "zh", "en")]))
    assert {k: v.words for k, v in texts.items()} == {"vi": 28, "zh": 11, "en": 6}
    assert {k: v.word_source for k, v in texts.items()} == {
        "vi": "treebank",
        "zh": "treebank",
        "en": "whitespace",
    }
    assert texts["zh"].chars == len("然而，这样的处理也衍生了一些问题。")
    assert texts["zh"].bytes == len("然而，这样的处理也衍生了一些问题。".encode())


def test_against_itself_is_exactly_one(tok_dir):
    texts = load_eval_texts(parse_inputs([str(UD / "fr.txt"), str(UD / "zh.txt")]))
    ours = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    same = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    table = fertility_table(ours, {"same": same}, texts)
    for row in table["languages"].values():
        ref = row["references"]["same"]
        assert ref["fertility"] == row["ours"]["fertility"]
        assert ref["fertility_diff_pct"] == 0.0


def test_numbers_match_the_library_and_a_hand_word_count(tok_dir):
    ours = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    neox = Tokenizer.from_file(str(NEOX))
    lines = [x for x in (UD / "es.txt").read_text().split("\n") if x.strip()]
    words = sum(len(x.split(" ")) for x in (UD / "es.words").read_text().split("\n") if x)
    texts = load_eval_texts(parse_inputs([str(UD / "es.txt")]))
    table = fertility_table(ours, {"neox": neox}, texts)
    row = table["languages"]["es"]
    tokens = {
        name: sum(len(tok.encode(x, add_special_tokens=False).ids) for x in lines)
        for name, tok in (("ours", ours), ("neox", neox))
    }
    assert row["words"] == words and row["lines"] == len(lines)
    assert row["ours"]["fertility"] == pytest.approx(tokens["ours"] / words, rel=1e-12)
    assert row["references"]["neox"]["fertility"] == pytest.approx(tokens["neox"] / words)
    assert row["ours"]["tokens_per_byte"] == pytest.approx(
        tokens["ours"] / len("".join(lines).encode())
    )
    assert row["ours"]["tokens_per_char"] == pytest.approx(tokens["ours"] / len("".join(lines)))
    diff = 100 * (tokens["ours"] / tokens["neox"] - 1)
    assert row["references"]["neox"]["fertility_diff_pct"] == pytest.approx(diff)


def test_more_training_text_of_a_language_lowers_its_fertility(tmp_path):
    # Same vocabulary, same other languages; one tokenizer sees all of fr, the other 15 lines.
    others = [str(CORPUS / f"{lang}.txt") for lang in ("en", "pt", "es")]
    few = tmp_path / "fr.txt"
    _head(CORPUS / "fr.txt", few, 15)
    kw = {"vocab_size": 800, "alpha": 1.0, "max_bytes_per_language": 300_000}
    little = train_tokenizer(parse_inputs([*others, str(few)]), **kw).tokenizer
    lots = train_tokenizer(parse_inputs([*others, str(CORPUS / "fr.txt")]), **kw).tokenizer
    texts = load_eval_texts(parse_inputs([str(UD / "fr.txt")]))
    row = fertility_table(lots, {"little": little}, texts)["languages"]["fr"]
    assert row["ours"]["fertility"] < 0.95 * row["references"]["little"]["fertility"]


def test_cli_references_from_file_and_folder(tok_dir, tmp_path, capsys):
    out = tmp_path / "fert"
    rc = main(
        [
            "tokenizer",
            "fertility",
            "--tokenizer",
            str(tok_dir),
            "--reference",
            f"neox={NEOX}",
            "--reference",
            f"self={tok_dir}",
            "--text",
            str(UD / "en.txt"),
            "--text",
            f"zh={UD / 'zh.txt'}",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| language | words | fertility ours | fertility neox | diff % vs neox |" in printed
    table = json.loads((out / "fertility.json").read_text())
    assert (out / "fertility.md").read_text().strip() in printed
    assert table["references"]["neox"]["path"] == str(NEOX)
    assert table["references"]["self"]["path"] == str(tok_dir / "tokenizer.json")
    en = table["languages"]["en"]
    assert en["word_source"] == "treebank" and en["references"]["self"]["fertility_diff_pct"] == 0
    neox = Tokenizer.from_file(str(NEOX))
    lines = [x for x in (UD / "en.txt").read_text().split("\n") if x.strip()]
    assert en["references"]["neox"]["tokens"] == sum(len(e.ids) for e in neox.encode_batch(lines))


def test_cli_monolingual_baselines(tok_dir, tmp_path, capsys):
    out = tmp_path / "fert"
    rc = main(
        [
            "tokenizer",
            "fertility",
            "--tokenizer",
            str(tok_dir),
            "--monolingual-baselines",
            "--baseline-vocab-size",
            "500",
            "--train-text",
            f"fr={CORPUS / 'fr.txt'}",
            "--text",
            str(UD / "fr.txt"),
            "--text",
            str(UD / "es.txt"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "baselines of es were trained on the evaluation text itself" in printed
    table = json.loads((out / "fertility.json").read_text())
    mono = table["references"]["monolingual"]
    assert mono["train_text"]["fr"] == [str(CORPUS / "fr.txt")]
    assert mono["trained_on_eval_text"] == ["es"]
    # The es baseline saw the evaluation text itself: it is the tighter fit by far.
    es = table["languages"]["es"]
    assert es["references"]["monolingual"]["fertility"] < es["ours"]["fertility"]
    # Rebuild the fr baseline independently of the CLI: same numbers.
    fr_texts = [x for x in (CORPUS / "fr.txt").read_text().split("\n") if x.strip()]
    fr_base = train_on_texts(fr_texts, 500)
    fr_lines = [x for x in (UD / "fr.txt").read_text().split("\n") if x.strip()]
    fr_tokens = sum(len(e.ids) for e in fr_base.encode_batch(fr_lines, add_special_tokens=False))
    assert table["languages"]["fr"]["references"]["monolingual"]["tokens"] == fr_tokens


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--text", "/nonexistent/fr.txt"], "/nonexistent/fr.txt: no such file"),
        (["--text", "MISALIGNED"], "fr.words:2: no words for line 2"),
        (["--reference", "x=/nonexistent"], "/nonexistent: no tokenizer.json found"),
        (["--reference", "oops"], "--reference 'oops': expected NAME=PATH"),
    ],
)
def test_cli_bad_input_one_line_error(tok_dir, tmp_path, capsys, args, message):
    _head(UD / "fr.txt", tmp_path / "fr.txt", 3)
    _head(UD / "fr.words", tmp_path / "fr.words", 1)
    args = [str(tmp_path / "fr.txt") if a == "MISALIGNED" else a for a in args]
    base = ["tokenizer", "fertility", "--tokenizer", str(tok_dir)]
    if "--text" not in args:
        base += ["--text", str(UD / "fr.txt")]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bloomforge: ") and message in err and err.count("\n") == 1
