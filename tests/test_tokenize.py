"""`bloomforge data tokenize`: shards checked against `tokenizers` and datatrove's own reader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from bloomforge.cli import main
from bloomforge.data import tokenize as tokmod
from bloomforge.data.shards import open_shard, read_manifest
from bloomforge.data.tokenize import tokenize_corpus
from bloomforge.errors import BloomforgeError
from bloomforge.tokenizer.io import SPECIAL_TOKENS, byte_level_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
dataset = pytest.importorskip("datatrove.utils.dataset")


def _lines(path: Path, n: int) -> list[str]:
    if not path.is_file():
        pytest.skip(f"{path} missing")
    out = [line for line in path.read_text("utf-8").splitlines() if line.strip()]
    return out[:n]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, list[str]]:
    """Small real multilingual text: a few hundred lines of UD corpus prose per language."""
    return {lang: _lines(DATA / "corpus" / f"{lang}.txt", 150) for lang in ("en", "fr", "zh")}


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, corpus) -> Path:
    """A tiny byte-level BPE trained here with `tokenizers` (BLOOM's special tokens at 0-3)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([t for texts in corpus.values() for t in texts], trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _write_inputs(root: Path, corpus: dict[str, list[str]]) -> list[str]:
    """en and fr as plain text, zh as gzipped prepared-style jsonl with source metadata."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "en.txt").write_text("\n".join(corpus["en"]) + "\n", "utf-8")
    (root / "fr.txt").write_text("\n".join(corpus["fr"]) + "\n", "utf-8")
    with gzip.open(root / "wiki.jsonl.gz", "wt", encoding="utf-8") as f:
        for i, t in enumerate(corpus["zh"]):
            meta = {"language": "zh", "source": "wiki"}
            f.write(json.dumps({"text": t, "id": str(i), "metadata": meta}) + "\n")
    return [str(root / "en.txt"), f"fr={root / 'fr.txt'}", str(root / "wiki.jsonl.gz")]


def _reference(tok_path: Path, corpus) -> dict[tuple[str, str], list[list[int]]]:
    """Per (source, language): each document's ids from `tokenizers` directly, plus EOS (2)."""
    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("</s>")
    assert eos == 2  # BLOOM's id for </s>
    keys = {("en", "en"): "en", ("fr", "fr"): "fr", ("wiki", "zh"): "zh"}
    return {
        key: [[*tok.encode(t, add_special_tokens=False).ids, eos] for t in corpus[lang]]
        for key, lang in keys.items()
    }


def test_shards_read_back_by_datatrove_equal_tokenizers(tmp_path, corpus, bpe):
    inputs = _write_inputs(tmp_path / "in", corpus)
    out = tmp_path / "tokens"
    tokenize_corpus(bpe, inputs, out, workers=2)
    ref = _reference(bpe, corpus)
    m = read_manifest(out)
    assert (m.token_size, m.dtype, m.eos_id) == (2, np.dtype("<u2"), 2)
    assert [s.file for s in m.shards] == ["en/en/00000.ds", "fr/fr/00000.ds", "wiki/zh/00000.ds"]
    seq = 31
    for s in m.shards:
        want = np.concatenate([np.array(d) for d in ref[(s.source, s.language)]])
        # datatrove's reference reader: consecutive windows of seq+1 tokens
        ds = dataset.DatatroveFileDataset(str(s.path), seq_len=seq, token_size=2)
        got = np.concatenate([ds[i]["input_ids"].numpy() for i in range(len(ds))])
        assert len(ds) == len(want) // (seq + 1) > 0
        np.testing.assert_array_equal(got, want[: len(got)])
        # our reader: all tokens and the document index (end offsets)
        tokens, ends = open_shard(m, s)
        np.testing.assert_array_equal(tokens, want)
        lengths = [len(d) for d in ref[(s.source, s.language)]]
        np.testing.assert_array_equal(ends, np.cumsum(lengths))
        assert (tokens[ends - 1] == 2).all()
        meta = s.path.with_name(s.path.name + ".metadata").read_text().splitlines()
        assert meta[:2] == ["tokenizer.json|2", str(len(want))]
    # the whole folder through datatrove's folder reader (recursive glob)
    folder = dataset.DatatroveFolderDataset(str(out), seq_len=seq, filename_pattern="**/*.ds")
    assert len(folder) == sum(s.tokens // (seq + 1) for s in m.shards)
    # datatrove's positions from the .index: position 0 right after each EOS
    ds = dataset.DatatroveFileDataset(
        str(m.shards[0].path), seq_len=seq, token_size=2, return_positions=True
    )
    item = ds[0]
    ids, pos = item["input_ids"].numpy(), item["positions"].numpy()
    assert (pos[1:][ids[:-1] == 2] == 0).all()


def test_manifest_counts_match_independent_counts(tmp_path, corpus, bpe):
    inputs = _write_inputs(tmp_path / "in", corpus)
    m = tokenize_corpus(bpe, inputs, tmp_path / "tokens", workers=1)
    ref = _reference(bpe, corpus)
    lang_of = {"en": "en", "fr": "fr", "wiki": "zh"}
    for (source, language), docs in ref.items():
        c = m["sources"][source][language]
        texts = corpus[lang_of[source]]
        assert c["documents"] == len(texts)
        assert c["tokens"] == sum(len(d) for d in docs)
        assert c["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert m["read"]["documents"] == sum(len(t) for t in corpus.values())
    assert m["vocab_size"] == 600 and m["dtype"] == "uint16"
    assert json.loads((tmp_path / "tokens" / "manifest.json").read_text()) == m
    assert (tmp_path / "tokens" / "tokenizer.json").read_bytes() == bpe.read_bytes()


def test_workers_and_rollover_give_identical_bytes(tmp_path, corpus, bpe, monkeypatch):
    monkeypatch.setattr(tokmod, "BATCH_DOCS", 16)  # many batches in flight at once
    inputs = _write_inputs(tmp_path / "in", corpus)
    cap = 1000
    outs = [tmp_path / f"w{w}" for w in (1, 2, 3)]
    for w, out in zip((1, 2, 3), outs, strict=True):
        tokenize_corpus(bpe, inputs, out, workers=w, shard_tokens=cap)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    for out in outs[1:]:
        assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        for f in files:
            if f.name != "manifest.json":
                assert (outs[0] / f).read_bytes() == (out / f).read_bytes(), f
    a, b = (json.loads((o / "manifest.json").read_text()) for o in outs[:2])
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    # rollover: several parts per language, each under the cap unless it holds one document,
    # every document whole, and the parts concatenated are the reference stream
    m = read_manifest(outs[0])
    ref = _reference(bpe, corpus)
    assert len(m.shards) > 3
    for key, docs in ref.items():
        parts = [s for s in m.shards if (s.source, s.language) == key]
        got_docs = []
        for s in parts:
            tokens, ends = open_shard(m, s)
            assert s.tokens <= cap or s.documents == 1
            got_docs += [tokens[a:b].tolist() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        assert got_docs == docs


def test_uint32_for_vocab_over_65536(tmp_path):
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"w{i}": i for i in range(4, 70_000)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok_path = tmp_path / "big.json"
    tok.save(str(tok_path))
    docs = ["w5 w65535 w65536 w69999", "w4", "w123 nope w66000"]
    (tmp_path / "x.txt").write_text("\n".join(docs) + "\n")
    m = tokenize_corpus(tok_path, [f"en={tmp_path / 'x.txt'}"], tmp_path / "t", workers=2)
    assert (m["token_size"], m["dtype"], m["vocab_size"]) == (4, "uint32", 70_000)
    want = [5, 65535, 65536, 69999, 2, 4, 2, 123, 0, 66000, 2]
    ds = dataset.DatatroveFileDataset(str(tmp_path / "t/x/en/00000.ds"), seq_len=10, token_size=4)
    assert ds[0]["input_ids"].tolist() == want
    manifest = read_manifest(tmp_path / "t")
    tokens, ends = open_shard(manifest, 0)
    assert tokens.tolist() == want and ends.tolist() == [5, 7, 11]
    assert tokmod.token_size_for(65536) == 2 and tokmod.token_size_for(65537) == 4
    with pytest.raises(BloomforgeError, match="uint32"):
        tokmod.token_size_for(2**32 + 1)


def test_bad_records_counted_and_reported(tmp_path, capsys):
    tok_path = tmp_path / "bytes.json"
    byte_level_tokenizer().save(str(tok_path))
    lines = [b'{"text": "ok one"}', b"{not json", b'{"txt": "no text key"}', b'{"text": ""}']
    lines += [b'{"text": "bad \xff utf8"}', b'{"text": "ok two", "metadata": {"language": "fr"}}']
    (tmp_path / "crawl.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    argv = ["data", "tokenize", "--tokenizer", str(tok_path), "--workers", "1"]
    rc = main([*argv, "--input", str(tmp_path / "crawl.jsonl"), "--out", str(tmp_path / "t")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped 4 records" in printed
    m = read_manifest(tmp_path / "t")
    assert m.read["skipped"] == {
        "bad JSON": 1,
        "missing text key 'text'": 1,
        "empty text": 1,
        "invalid UTF-8": 1,
    }
    # byte-level tokenizer: one token per UTF-8 byte, + EOS
    assert m.sources == {
        "crawl": {
            "und": {"tokens": 7, "documents": 1, "bytes": 6},
            "fr": {"tokens": 7, "documents": 1, "bytes": 6},
        }
    }


def test_failure_midway_leaves_no_output(tmp_path, corpus, bpe, monkeypatch):
    monkeypatch.setattr(tokmod, "BATCH_DOCS", 8)
    inputs = _write_inputs(tmp_path / "in", corpus)
    real_load = tokmod.load_tokenizer

    class CrashingTokenizer:
        """The real tokenizer, except that its 5th batch raises (a crash part-way)."""

        def __init__(self, path):
            self.tok, self.calls = real_load(path), 0

        def __getattr__(self, name):
            return getattr(self.tok, name)

        def encode_batch_fast(self, texts, add_special_tokens=True):
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("disk on fire")
            return self.tok.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

    out = tmp_path / "tokens"
    with monkeypatch.context() as mp:
        mp.setattr(tokmod, "load_tokenizer", CrashingTokenizer)
        with pytest.raises(RuntimeError, match="disk on fire"):
            tokenize_corpus(bpe, inputs, out, workers=2, shard_tokens=200)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # no temp folder left behind
    # an earlier complete folder survives a failed rerun untouched
    tokenize_corpus(bpe, inputs, out, workers=2)
    before = (out / "manifest.json").read_bytes()
    with monkeypatch.context() as mp:
        mp.setattr(tokmod, "load_tokenizer", CrashingTokenizer)
        with pytest.raises(RuntimeError):
            tokenize_corpus(bpe, inputs, out, workers=2)
    assert (out / "manifest.json").read_bytes() == before
    read_manifest(out)


def test_source_names_become_safe_distinct_folders(tmp_path):
    tok_path = tmp_path / "bytes.json"
    byte_level_tokenizer().save(str(tok_path))
    recs = [{"text": "a", "metadata": {"source": "../web crawl", "language": "en"}}]
    recs += [{"text": "b", "metadata": {"source": "../web_crawl", "language": "en"}}]
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    m = read_manifest_after(tmp_path, tok_path, [str(tmp_path / "x.jsonl")])
    assert [(s.file, s.source) for s in m.shards] == [
        ("_web_crawl-2/en/00000.ds", "../web_crawl"),
        ("_web_crawl/en/00000.ds", "../web crawl"),
    ]
    assert all(s.path.resolve().is_relative_to((tmp_path / "t").resolve()) for s in m.shards)


def read_manifest_after(tmp_path: Path, tok_path: Path, inputs: list[str]):
    tokenize_corpus(tok_path, inputs, tmp_path / "t", workers=1)
    return read_manifest(tmp_path / "t")


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bloomforge: ") and "\n" not in err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    tok_path = tmp_path / "bytes.json"
    byte_level_tokenizer().save(str(tok_path))
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "a.txt").write_text("hello\n")
    base = ["data", "tokenize", "--tokenizer", str(tok_path), "--out", str(tmp_path / "t")]
    assert "no such file" in _cli_error(capsys, [*base, "--input", str(tmp_path / "nope.txt")])
    assert "no documents" in _cli_error(capsys, [*base, "--input", str(tmp_path / "blank.txt")])
    no_eos = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    no_eos.save(str(tmp_path / "noeos.json"))
    argv = ["data", "tokenize", "--tokenizer", str(tmp_path / "noeos.json")]
    argv += ["--input", str(tmp_path / "a.txt"), "--out", str(tmp_path / "t")]
    assert "no EOS token '</s>'" in _cli_error(capsys, argv)
    argv = ["data", "tokenize", "--tokenizer", str(tmp_path / "none"), "--input"]
    assert "no tokenizer.json" in _cli_error(capsys, [*argv, str(tmp_path / "a.txt"), "--out", "x"])
    assert "--workers" in _cli_error(
        capsys, [*base, "--input", str(tmp_path / "a.txt"), "--workers", "-1"]
    )
    assert not (tmp_path / "t").exists()


def test_read_manifest_rejects_incomplete_or_corrupt_folders(tmp_path):
    tok_path = tmp_path / "bytes.json"
    byte_level_tokenizer().save(str(tok_path))
    (tmp_path / "a.txt").write_text("hello\nworld\n")
    with pytest.raises(BloomforgeError, match=r"no manifest\.json"):
        read_manifest(tmp_path)
    m = read_manifest_after(tmp_path, tok_path, [str(tmp_path / "a.txt")])
    shard = m.shards[0].path
    shard.write_bytes(shard.read_bytes()[:-2])  # a truncated shard
    with pytest.raises(BloomforgeError, match=r"00000\.ds: 22 bytes, manifest.json implies 24"):
        read_manifest(tmp_path / "t")
    shard.unlink()
    with pytest.raises(BloomforgeError, match="missing"):
        read_manifest(tmp_path / "t")
    (tmp_path / "t" / "manifest.json").write_text('{"format": "megatron"}')
    with pytest.raises(BloomforgeError, match="format is 'megatron'"):
        read_manifest(tmp_path / "t")


def test_interleaved_languages_with_few_open_files(tmp_path, monkeypatch):
    """Records alternating over 3 languages with at most 2 shards open: more parts, same docs."""
    monkeypatch.setattr(tokmod, "MAX_OPEN", 2)
    monkeypatch.setattr(tokmod, "BATCH_DOCS", 4)
    tok_path = tmp_path / "bytes.json"
    byte_level_tokenizer().save(str(tok_path))
    langs = ["en", "fr", "de"]
    recs = [{"text": f"doc {i} é", "metadata": {"language": langs[i % 3]}} for i in range(30)]
    (tmp_path / "mix.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    m = read_manifest_after(tmp_path, tok_path, [str(tmp_path / "mix.jsonl")])
    assert len(m.shards) > 3
    tok = Tokenizer.from_file(str(tok_path))
    for lang in langs:
        got = []
        for s in (s for s in m.shards if s.language == lang):
            tokens, ends = open_shard(m, s)
            assert (tokens[ends - 1] == 2).all()
            starts = [0, *ends[:-1]]
            got += [
                tok.decode(tokens[a : b - 1].tolist()) for a, b in zip(starts, ends, strict=True)
            ]
        assert got == [r["text"] for r in recs if r["metadata"]["language"] == lang]
