"""`bloomforge run` from the tokenizer stage on, over prepared documents written here: every
artifact, the HF export loaded by transformers, the report, skipping, re-running what a changed
key touches, --from/--until, and a run killed in training that resumes from its checkpoint."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bloomforge.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGS = ("fr", "en", "eu")
RECIPE = """
tokenizer: {vocab_size: 400, fertility_docs: 10}
tokens: {heldout_every: 8, heldout_docs: 4}
model: {preset: micro}
data: {seq_len: 64, group_by: language, alpha: 0.3}
train:
  lr: 3e-3
  min_lr: 3e-4
  warmup_tokens: 256
  decay_tokens: 4096
  max_tokens: 4096
  global_batch_size: 8
  micro_batch_size: 8
  precision: fp32
  save_every: 2
  log_every: 1
  eval_samples: 2
eval: {batch_size: 8, generate: {prompts_per_language: 1, max_new_tokens: 6}}
workers: 1
"""
STAGES_RUN = ("tokenizer", "tokens", "train", "eval", "export", "report")


def write_documents(run: Path) -> dict[str, int]:
    """data/documents in the prepared format (datatrove jsonl.gz); documents per language."""
    if not (SHARED / "corpus" / "fr.txt").exists():
        pytest.skip("shared data not available")
    out = run / "data" / "documents"
    out.mkdir(parents=True)
    counts = {}
    with gzip.open(out / "00000.jsonl.gz", "wt", encoding="utf-8") as f:
        for lang in LANGS:
            lines = (SHARED / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
            docs = [" ".join(lines[i : i + 4]) for i in range(0, 240, 4)]
            counts[lang] = len(docs)
            for i, text in enumerate(docs):
                meta = {"source": f"ud-{lang}", "language": lang}
                f.write(json.dumps({"text": text, "id": f"{lang}-{i}", "metadata": meta}) + "\n")
    return counts


def _ran(capsys) -> list[str]:
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if ": ran " in x][-1]
    ran = line.split(": ran ", 1)[1]
    return [] if ran.startswith("nothing") else ran.split(", ")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    recipe = root / "recipe.yaml"
    recipe.write_text(RECIPE)
    run = root / "run"
    counts = write_documents(run)
    code = main(["run", str(recipe), "--out", str(run), "--from", "tokenizer"])
    assert code == 0
    return recipe, run, counts


def test_every_artifact_and_counts_add_up(first_run):
    _, run, counts = first_run
    for rel in (
        "recipe.yaml",
        "tokenizer/tokenizer.json",
        "tokenizer/fertility.json",
        "tokens/manifest.json",
        "train/metrics.jsonl",
        "eval/results.json",
        "hf/config.json",
        "hf/model.safetensors",
        "report.html",
        "MODEL_CARD.md",
        "DATA_CARD.md",
    ):
        assert (run / rel).is_file(), rel
    assert sorted(p.stem for p in (run / ".stages").glob("*.json")) == sorted(STAGES_RUN)
    # Every document is either tokenized or held out, per language.
    manifest = json.loads((run / "tokens" / "manifest.json").read_text())
    held = {p.stem: len(p.read_text().splitlines()) for p in (run / "heldout").glob("*.jsonl")}
    for lang in LANGS:
        tokenized = manifest["sources"][f"ud-{lang}"][lang]["documents"]
        assert 1 <= held[lang] <= 4
        assert tokenized + held[lang] == counts[lang]
    results = json.loads((run / "eval" / "results.json").read_text())
    assert sorted(k for k in results["perplexity"] if not k.startswith("_")) == sorted(LANGS)
    assert sorted(results["generations"]) == sorted(LANGS)
    fert = json.loads((run / "tokenizer" / "fertility.json").read_text())
    assert sorted(fert["languages"]) == sorted(LANGS)
    train = json.loads((run / ".stages" / "train.json").read_text())
    assert train["details"]["tokens"] >= 4096


def test_report_is_offline_and_names_every_language(first_run):
    _, run, _ = first_run
    html = (run / "report.html").read_text()
    for lang in LANGS:
        assert f"<td>{lang}</td>" in html
        assert f"| {lang} |" in (run / "MODEL_CARD.md").read_text()
        assert f"| {lang} |" in (run / "DATA_CARD.md").read_text()
    assert "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for section in ("Data card", "Tokenizer", "Model card", "Training curves", "Evaluation"):
        assert f">{section}</h" in html
    assert "Energy and CO2" in html


def test_hf_export_loads_and_generates(first_run):
    _, run, _ = first_run
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(run / "hf", local_files_only=True)
    model = transformers.BloomForCausalLM.from_pretrained(run / "hf", local_files_only=True)
    ids = tok("Le chat", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    check = json.loads((run / ".stages" / "export.json").read_text())["details"]["check"]
    assert check < 1e-3


def test_second_run_skips_every_stage(first_run, capsys):
    recipe, run, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in (run / ".stages").glob("*.json")}
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(run), "--from", "tokenizer"]) == 0
    assert _ran(capsys) == []
    assert {p: p.stat().st_mtime_ns for p in (run / ".stages").glob("*.json")} == before


def test_changed_train_key_reruns_train_and_after_only(first_run, tmp_path, capsys):
    recipe, run, _ = first_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    tok_mtime = (copy / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    capsys.readouterr()
    argv = ["run", str(recipe), "--out", str(copy), "--from", "tokenizer", "train.lr=2e-3"]
    assert main(argv) == 0
    assert _ran(capsys) == ["train", "eval", "export", "report"]
    assert (copy / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == tok_mtime
    assert "lr: 0.002" in (copy / "train" / "config.yaml").read_text()
    # An eval key re-runs eval and the report only; zero-shot tasks reach both.
    argv = ["run", str(recipe), "--out", str(copy), "--from", "tokenizer", "train.lr=2e-3"]
    argv += ["eval.tasks=[copa]", f"eval.data={SHARED / 'eval'}", "eval.limit=8"]
    assert main(argv) == 0
    assert _ran(capsys) == ["eval", "report"]
    copa = json.loads((copy / "eval" / "results.json").read_text())["tasks"]["copa"]["all"]
    assert copa["n"] == 8 and 0 <= copa["acc"] <= 1
    assert "<h3>copa</h3>" in (copy / "report.html").read_text()
    # A changed tokenizer key re-runs the tokenizer and everything after it.
    argv = ["run", str(recipe), "--out", str(copy), "--until", "tokens", "tokenizer.vocab_size=350"]
    argv.insert(4, "--from=tokenizer")
    assert main(argv) == 0
    assert _ran(capsys) == ["tokenizer", "tokens"]


def test_from_until_select_stages(first_run, tmp_path, capsys):
    recipe, _, _ = first_run
    run = tmp_path / "run"
    write_documents(run)
    capsys.readouterr()
    argv = ["run", str(recipe), "--out", str(run), "--from", "tokenizer", "--until", "tokenizer"]
    assert main(argv) == 0
    assert _ran(capsys) == ["tokenizer"]
    assert (run / "tokenizer" / "tokenizer.json").exists() and not (run / "tokens").exists()
    argv = ["run", str(recipe), "--out", str(run), "--from", "tokenize", "--until", "tokens"]
    assert main(argv) == 0
    assert _ran(capsys) == ["tokens"]
    assert not (run / "train").exists()


def test_from_needs_upstream_outputs(first_run, tmp_path, capsys):
    recipe, _, _ = first_run
    run = tmp_path / "run"
    write_documents(run)
    assert main(["run", str(recipe), "--out", str(run), "--from", "eval"]) == 2
    assert "needs the outputs of 'train'" in capsys.readouterr().err
    assert main(["run", str(recipe), "--out", str(run), "--from", "trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err
    # Documents put there by hand are never replaced by a data stage that did not write them.
    docs = sorted((run / "data" / "documents").iterdir())
    assert main(["run", str(recipe), "--out", str(run)]) == 2
    assert "was not written by this run's data stage" in capsys.readouterr().err
    assert sorted((run / "data" / "documents").iterdir()) == docs
    assert main(["run", str(recipe), "--out", str(run), "--until", "corpus"]) == 2
    assert "select no stage" in capsys.readouterr().err


def test_unknown_recipe_key_names_nearest(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("tokenizer: {vocab_sise: 400}\n")
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    assert "did you mean 'tokenizer.vocab_size'" in capsys.readouterr().err


def test_killed_run_resumes_training_from_checkpoint(first_run, tmp_path, capsys):
    recipe, _, _ = first_run
    run = tmp_path / "run"
    write_documents(run)
    env = {**os.environ, "BLOOMFORGE_FAULT": "step@5"}  # SIGKILL after step 5 (saved at 4)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    argv = [sys.executable, "-m", "bloomforge", "run", str(recipe), "--out", str(run)]
    proc = subprocess.run([*argv, "--from", "tokenizer"], env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert not (run / ".stages" / "train.json").exists()
    assert (run / ".stages" / "tokens.json").exists()
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(run), "--from", "tokenizer"]) == 0
    out = capsys.readouterr().out
    assert "[train] resuming" in out and "resumed from" in out
    assert _ran_from(out) == ["train", "eval", "export", "report"]
    steps = [
        json.loads(x)["step"]
        for x in (run / "train" / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["kind"] == "train"
    ]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 8  # 4096 / (8 x 64)


def _ran_from(out: str) -> list[str]:
    line = [x for x in out.splitlines() if ": ran " in x][-1]
    return line.split(": ran ", 1)[1].split(", ")


@pytest.mark.parametrize("small", [False, True])
def test_printed_demo_recipe_is_the_one_demo_runs(small, tmp_path, capsys):
    from bloomforge.pipeline.config import demo_recipe_data
    from bloomforge.recipe import Recipe, load_recipe
    from bloomforge.typed_config import from_dict

    capsys.readouterr()
    assert main(["demo", "--print-recipe", *(["--small"] if small else [])]) == 0
    (tmp_path / "r.yaml").write_text(capsys.readouterr().out)
    printed = load_recipe(tmp_path / "r.yaml")
    assert printed == from_dict(Recipe, demo_recipe_data(small))
    assert printed.corpus is not None and printed.corpus.locale_dir == "/usr/share/locale"


def test_energy_estimate_without_codecarbon_file(tmp_path):
    from bloomforge.pipeline.cards import _energy
    from bloomforge.recipe import load_recipe

    recipe = load_recipe(None, ["report.power_w=100", "train.carbon_country=FRA"])
    e = _energy(tmp_path, recipe, train_seconds=3600.0)
    # 1 h x 100 W = 0.1 kWh; x 57 gCO2eq/kWh (Luccioni et al. 2022, French grid) = 5.7 g.
    assert not e["measured"]
    assert e["kwh"] == pytest.approx(0.1)
    assert e["kg_co2"] == pytest.approx(0.0057)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "emissions.csv").write_text(
        "timestamp,duration,emissions,energy_consumed\nx,10,0.002,0.03\ny,5,0.001,0.01\n"
    )
    e = _energy(tmp_path, recipe, train_seconds=3600.0)
    assert e["measured"] and e["kwh"] == pytest.approx(0.04) and e["kg_co2"] == pytest.approx(0.003)


def test_a_stopped_train_stage_is_reported_and_resumed(first_run, tmp_path, capsys):
    """The kill switch stops training after a saved step: `run` says so and exits 130 (a value
    from the stage, not an exception), the stage stays unfinished, the next `run` resumes it."""
    recipe, _, _ = first_run
    run = tmp_path / "run"
    write_documents(run)
    switch = tmp_path / "stop-now"
    switch.touch()
    argv = ["run", str(recipe), "--out", str(run), "--from", "tokenizer"]
    assert main([*argv, f"train.kill_switch={switch}"]) == 130
    captured = capsys.readouterr()
    assert "[train] stopped: kill switch" in captured.out
    assert "stopped in train (kill switch" in captured.err
    assert not (run / ".stages" / "train.json").exists()
    assert (run / ".stages" / "train.started").exists() and not (run / "eval").exists()
    switch.unlink()
    assert main([*argv, f"train.kill_switch={switch}"]) == 0
    out = capsys.readouterr().out
    assert "[train] resuming" in out and _ran_from(out) == ["train", "eval", "export", "report"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "loader: {seq_len: 64}\n",
            "key 'loader' was renamed: the training loader's section is 'data'",
        ),
        (
            "data: {sources: [{name: a, paths: [x.txt]}]}\n",
            "key 'data.sources' was renamed: data prepare's section is 'prepare'",
        ),
        ("eval: {prompts_per_language: 1}\n", "it is 'eval.generate.prompts_per_language'"),
        ("mtf: {}\nfinetune: {loader: {seq_len: 64}}\n", "key 'finetune.loader' was renamed"),
        ("finetune: {}\n", "keys 'mtf' and 'finetune': give both sections"),
    ],
)
def test_keys_of_the_former_run_schema_are_one_line_errors(tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bloomforge:") and "\n" not in err and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["data.tokens", "data.mtf", "tokenizer.path", "out", "init"])
def test_run_refuses_a_key_it_sets_itself(tmp_path, capsys, key):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), f"{key}=x"]) == 2
    assert f"key '{key}': set by `bloomforge run`" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_run_recipe_is_the_train_recipe(first_run, tmp_path):
    """One recipe: `bloomforge train` on the run's own recipe file (its stage sections ignored)
    with the paths the run fills in trains the very weights the run's train stage trained."""
    import torch
    from safetensors.torch import load_file

    recipe, run, _ = first_run
    out = tmp_path / "train"
    argv = [f"data.tokens={run / 'tokens'}", f"tokenizer.path={run / 'tokenizer'}", f"out={out}"]
    assert main(["train", str(recipe), *argv]) == 0
    ours = sorted((out / "checkpoints").iterdir())[-1] / "model.safetensors"
    theirs = sorted((run / "train" / "checkpoints").iterdir())[-1] / "model.safetensors"
    assert ours.parent.name == theirs.parent.name
    a, b = load_file(ours), load_file(theirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_command_equals_the_run_eval_stage_on_checkpoint_and_hf_folder(first_run, tmp_path):
    """`bloomforge eval` and the run's eval stage are one function: the same bits per byte on
    the held-out text, from the run's model and from its HF export."""
    _, run, _ = first_run
    stage = json.loads((run / "eval" / "results.json").read_text())["perplexity"]
    for model in ("train", "hf"):
        out = tmp_path / f"{model}.json"
        argv = ["eval", str(run / model), "--perplexity", str(run / "heldout"), "--out", str(out)]
        assert main([*argv, "--batch-size", "8"]) == 0
        got = json.loads(out.read_text())["perplexity"]
        assert sorted(got) == sorted(stage)
        for lang in LANGS:
            want = stage[lang]["bits_per_byte"]
            assert got[lang]["bits_per_byte"] == pytest.approx(want, rel=1e-5), (model, lang)


def test_eval_prompts_in_a_run_equal_the_eval_command(first_run, tmp_path, capsys):
    """eval.prompts in a run recipe scores the tasks under every promptsource prompt, as
    `bloomforge eval --prompts` does, and the report and model card show the medians."""
    recipe, run, _ = first_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    prompts = SHARED / "mtf" / "promptsource" / "super_glue" / "copa"
    keys = [
        "eval.tasks=[copa]",
        f"eval.data={SHARED / 'eval'}",
        "eval.limit=8",
        f"eval.prompts=[{prompts}]",
    ]
    assert main(["run", str(recipe), "--out", str(copy), "--from", "tokenizer", *keys]) == 0
    assert _ran(capsys) == ["eval", "report"]
    got = json.loads((copy / "eval" / "results.json").read_text())["prompted"]["copa"]
    out = tmp_path / "eval.json"
    argv = ["eval", str(copy / "train"), "--tasks", "copa", "--data", str(SHARED / "eval")]
    assert main([*argv, "--limit", "8", "--prompts", str(prompts), "--out", str(out)]) == 0
    want = json.loads(out.read_text())["prompted"]["copa"]
    assert got["summary"] == want["summary"]
    assert all(m["n_prompts"] > 1 for m in got["summary"].values())
    assert "copa: accuracy over prompts" in (copy / "report.html").read_text()
    lang = next(iter(got["summary"]))
    assert f"copa {lang}: median accuracy over" in (copy / "MODEL_CARD.md").read_text()


def test_generation_prompt_words_and_report_grid_country(first_run, tmp_path, capsys):
    """eval.generate.prompt_words cuts the held-out prompts to that many words; without a
    codecarbon measurement, report.grid_country picks the grid of the CO2 estimate."""
    recipe, run, _ = first_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "train" / "emissions.csv").unlink(missing_ok=True)  # as on a machine without codecarbon
    before = json.loads((copy / "eval" / "results.json").read_text())["generations"]
    assert max(len(g["prompt"].split()) for gs in before.values() for g in gs) > 2
    keys = ["eval.generate.prompt_words=2", "report.grid_country=USA"]
    assert main(["run", str(recipe), "--out", str(copy), "--from", "tokenizer", *keys]) == 0
    assert _ran(capsys) == ["eval", "report"]
    after = json.loads((copy / "eval" / "results.json").read_text())["generations"]
    assert all(len(g["prompt"].split()) <= 2 for gs in after.values() for g in gs)
    card = (copy / "MODEL_CARD.md").read_text()
    assert "(USA:" in card and "(FRA:" not in card
