"""The stages chained through their commands: tokenizer train -> data tokenize -> train -> eval,
export. Each stage reads exactly what the previous one wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bloomforge.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_text_to_evaluated_exported_model(tmp_path, capsys):
    if not (SHARED / "corpus" / "fr.txt").exists():
        pytest.skip("shared data not available")
    texts = []
    for lang in ("fr", "en", "eu"):  # a small slice of each language keeps this fast
        lines = (SHARED / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        (tmp_path / f"{lang}.txt").write_text("\n".join(lines[:300]) + "\n", encoding="utf-8")
        texts.append(str(tmp_path / f"{lang}.txt"))
    tok, tokens, run = tmp_path / "tok", tmp_path / "tokens", tmp_path / "run"
    argv = ["tokenizer", "train", "--input", *texts, "--vocab-size", "400", "--out", str(tok)]
    assert main(argv) == 0
    assert (
        main(
            [
                "data",
                "tokenize",
                "--tokenizer",
                str(tok),
                "--input",
                *texts,
                "--out",
                str(tokens),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert sorted(manifest["sources"]) == ["en", "eu", "fr"]
    recipe = str(Path(__file__).parent / "data" / "empty_recipe.yaml")
    assert (
        main(
            [
                "train",
                recipe,
                "model=micro",
                f"data.tokens={tokens}",
                "data.seq_len=64",
                "data.group_by=language",
                "data.alpha=0.3",
                "train.global_batch_size=4",
                "train.micro_batch_size=2",
                "train.max_tokens=1024",
                "train.warmup_tokens=256",
                "train.decay_tokens=1024",
                "train.precision=fp32",
                f"out={run}",
            ]
        )
        == 0
    )
    config = (run / "config.yaml").read_text()
    assert "vocab_size: 400" in config  # the tokenizer decided the vocabulary
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                str(run),
                "--perplexity",
                f"fr={texts[0]}",
                "--limit",
                "20",
                "--out",
                str(tmp_path / "results.json"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert "fr" in json.dumps(results)
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    transformers = pytest.importorskip("transformers")
    model = transformers.BloomForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    assert model.config.vocab_size >= 400
