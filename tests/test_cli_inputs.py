"""`--input [NAME=]PATH` means one thing in every command that reads documents: `data prepare`,
`data tokenize`, `tokenizer train` (and `tokenizer fertility --text`). A NAME that is a language
code is the language of its documents; any other NAME names their source, and the language
comes from each record (then the file name)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pytest

from bloomforge.cli import main
from bloomforge.documents import inputs
from bloomforge.documents.inputs import parse_inputs, read_documents, split_input

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """French and English records, each naming its language, in a file not named after one."""
    path = tmp_path_factory.mktemp("inputs") / "mixed.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for lang in ("fr", "en"):
            lines = (CORPUS / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:150]
            for i, text in enumerate(t for t in lines if t.strip()):
                record = {"text": text, "id": f"{lang}-{i}", "metadata": {"language": lang}}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _three_commands(spec: str, docs: Path, out: Path) -> dict[str, dict[str, set[str]]]:
    """{command: {source: languages}} of what each command read from `--input spec`."""
    tok, tokens, prepared = out / "tok", out / "tokens", out / "prepared"
    train = ["tokenizer", "train", "--input", spec, "--vocab-size", "300", "--out", str(tok)]
    assert main(train) == 0
    tokenize = ["data", "tokenize", "--tokenizer", str(tok), "--input", spec, "--out", str(tokens)]
    assert main([*tokenize, "--workers", "1", "--no-progress"]) == 0
    prepare = ["data", "prepare", "--input", spec, "--out", str(prepared)]
    assert main([*prepare, "--no-filters", "--no-dedup", "--no-pii"]) == 0

    sampling = json.loads((tok / "sampling.json").read_text())
    manifest = json.loads((tokens / "manifest.json").read_text())
    read: dict[str, set[str]] = {}
    for doc in read_documents(parse_inputs([str(prepared / "documents")])):
        read.setdefault(doc.source, set()).add(doc.language)
    return {
        "tokenizer train": {"*": set(sampling["languages"])},
        "data tokenize": {s: set(langs) for s, langs in manifest["sources"].items()},
        "data prepare": read,
    }


def test_name_that_is_a_language_code_is_the_language_everywhere(docs, tmp_path):
    got = _three_commands(f"fr={docs}", docs, tmp_path)
    assert got["tokenizer train"] == {"*": {"fr"}}
    assert got["data tokenize"] == {"mixed": {"fr"}}  # the source: the file's name
    assert got["data prepare"] == {"fr": {"fr"}}  # each --input is one source, named NAME


def test_other_name_names_the_source_and_records_give_the_language(docs, tmp_path):
    # `xx` looks like a language code but is none (not ISO 639-1): every command reads it as
    # the source's name, the language from each record (data tokenize once forced `xx`)
    got = _three_commands(f"xx={docs}", docs, tmp_path)
    assert got["tokenizer train"] == {"*": {"fr", "en"}}
    assert got["data tokenize"] == got["data prepare"] == {"xx": {"fr", "en"}}


def test_a_path_with_an_equals_sign_is_a_path_everywhere(docs, tmp_path):
    """`runs/lr=0.1/mixed.jsonl` has no NAME: its first '=' is inside a folder name. data
    prepare once split it there (source `.../runs/lr`, path `0.1/mixed.jsonl`)."""
    folder = tmp_path / "runs" / "lr=0.1"
    folder.mkdir(parents=True)
    path = shutil.copy(docs, folder / "mixed.jsonl")
    got = _three_commands(str(path), docs, tmp_path / "plain")
    assert got["tokenizer train"] == {"*": {"fr", "en"}}
    assert got["data tokenize"] == got["data prepare"] == {"mixed": {"fr", "en"}}
    got = _three_commands(f"fr={path}", docs, tmp_path / "named")
    assert got["tokenizer train"] == {"*": {"fr"}}
    assert got["data tokenize"] == {"mixed": {"fr"}} and got["data prepare"] == {"fr": {"fr"}}


def test_an_output_inside_an_input_with_an_equals_sign_is_refused(docs, tmp_path, capsys):
    """The input a command must not write into is PATH as `split_input` reads it (the outputs
    check once split at the last '=', so `fr=runs/lr=0.1` protected `0.1`)."""
    folder = tmp_path / "runs" / "lr=0.1"
    folder.mkdir(parents=True)
    shutil.copy(docs, folder / "mixed.jsonl")
    spec = f"fr={folder}"
    for argv in (
        ["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--input", spec],
        ["data", "prepare", "--input", spec],
        ["tokenizer", "train", "--input", spec, "--vocab-size", "300"],
    ):
        out = folder / argv[1]
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err == f"bloomforge: {out}: is inside the input {folder}; write to another folder\n"
        assert sorted(p.name for p in folder.iterdir()) == ["mixed.jsonl"]


def test_prepare_on_slurm_names_the_job_environment_once(docs, tmp_path, capsys, monkeypatch):
    """Which venv the Slurm jobs activate (chosen by bloomforge when the config names none) is
    said once per submission, not once per job array. A fake `sbatch` takes the jobs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho Submitted batch job 42\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    config = tmp_path / "data.yaml"
    config.write_text(
        f"sources:\n  - {{name: web, paths: ['{docs}'], filters: false, dedup: false}}\n"
        "slurm: {partition: cpu}\n"
    )
    argv = ["data", "prepare", "--config", str(config), "--executor", "slurm"]
    assert main([*argv, "--out", str(tmp_path / "prepared")]) == 0
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if line.startswith("Slurm jobs will activate ")]
    if sys.prefix == sys.base_prefix:  # not in a venv: the jobs use the submitting shell's PATH
        assert said == []
    else:
        assert said == [
            f"Slurm jobs will activate {Path(sys.prefix) / 'bin' / 'activate'} "
            "(set slurm.venv_path to change)"
        ]
    assert out[-1].startswith("submitted ") and out[-1].endswith(
        f" Slurm stages; stats.json is written to {tmp_path / 'prepared'} by the last one"
    )


def test_fertility_text_reads_the_name_the_same_way(docs, tmp_path):
    tok = tmp_path / "tok"
    assert (
        main(["tokenizer", "train", "--input", str(docs), "--vocab-size", "300", "--out", str(tok)])
        == 0
    )
    for spec, languages in ((f"fr={docs}", ["fr"]), (f"xx={docs}", ["en", "fr"])):
        out = tmp_path / spec.split("=")[0]
        argv = [
            "tokenizer",
            "fertility",
            "--tokenizer",
            str(tok),
            "--text",
            spec,
            "--out",
            str(out),
        ]
        assert main(argv) == 0
        assert sorted(json.loads((out / "fertility.json").read_text())["languages"]) == languages


def test_one_argument_one_help(capsys):
    """The four options are built by one helper: same metavar and the same help text."""
    helps = []
    for argv in (
        ["data", "prepare"],
        ["data", "tokenize"],
        ["tokenizer", "train"],
        ["tokenizer", "fertility"],
    ):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        helps.append(" ".join(capsys.readouterr().out.split()))
    assert all("[NAME=]PATH" in h for h in helps)
    shared = " ".join(inputs.INPUT_HELP.split())
    assert all(shared in h for h in helps), helps


def test_split_input():
    assert split_input("fr=a.txt") == ("fr", "a.txt")
    assert split_input("web=crawl/*.jsonl.gz") == ("web", "crawl/*.jsonl.gz")
    assert split_input("a.txt") == (None, "a.txt")
    assert split_input("fr=dir/a=b.txt") == ("fr", "dir/a=b.txt")  # the first '=' splits
    assert split_input("runs/lr=0.1/docs.jsonl") == (None, "runs/lr=0.1/docs.jsonl")  # a path
    for bad in ("=a.txt", "fr=", "a b=c.txt"):
        with pytest.raises(inputs.BloomforgeError, match="input '"):
            split_input(bad)
    assert inputs.language_of_name("fr") == "fr" and inputs.language_of_name("code") == "code"
    assert inputs.language_of_name("xx") is None and inputs.language_of_name(None) is None


def test_the_language_codes_are_data_prepares():
    """`data prepare` validates a source's language against the same codes."""
    from bloomforge.data.prepare import config

    assert config.LANGUAGES == inputs.LANGUAGES


def test_helper_adds_the_option_to_a_group():
    parser = argparse.ArgumentParser()
    group = parser.add_mutually_exclusive_group(required=True)
    inputs.add_input_argument(group)
    group.add_argument("--config")
    assert parser.parse_args(["--input", "a", "fr=b", "--input", "c"]).input == ["a", "fr=b", "c"]
