"""`bloomforge run` with the multitask finetuning stages: mtf (prompted Tatoeba) and finetune
(the trained model, BLOOMZ-style, with rank evaluation over the COPA prompts before and after),
then eval and export of the finetuned model and the report's finetuning section."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from bloomforge.cli import main
from test_pipeline import RECIPE, SHARED, _ran, write_documents

PROMPTS = SHARED / "mtf" / "promptsource"


@pytest.fixture(scope="module")
def ft_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftpipe")
    tat = root / "tatoeba"
    tat.mkdir()
    for name in ("tatoeba.fra-eng.fra", "tatoeba.fra-eng.eng"):
        shutil.copy(SHARED / "corpus" / "tatoeba" / name, tat / name)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        RECIPE
        + f"""
mtf:
  templates: [{PROMPTS}]
  tasks: {{tatoeba: {tat}}}
  max_per_dataset: 300
finetune:
  data: {{seq_len: 128}}
  train:
    lr: 1.0e-3
    min_lr: 1.0e-3
    max_tokens: 8192
    decay_tokens: 8192
    global_batch_size: 16
    micro_batch_size: 8
    save_every: 2
  eval:
    tasks: [copa]
    data: {SHARED / "eval"}
    prompts: [{PROMPTS / "super_glue" / "copa"}]
    limit: 8
"""
    )
    run = root / "run"
    write_documents(run)
    assert main(["run", str(recipe), "--out", str(run), "--from", "tokenizer"]) == 0
    return recipe, run


def test_run_finetunes_after_train_and_exports_the_finetuned_model(ft_run):
    _, run = ft_run
    manifest = json.loads((run / "xp3" / "manifest.json").read_text())
    assert manifest["files"]["fr"]["records"] == manifest["totals"]["written"] == 300
    ft_config = (run / "finetune" / "config.yaml").read_text()
    assert str(run / "train") in ft_config and str(run / "xp3") in ft_config
    rank = json.loads((run / "finetune" / "rank_eval.json").read_text())
    for when in ("before", "after"):
        summary = rank[when]["copa"]["summary"]["en"]
        assert summary["n_prompts"] == 12 and summary["min"] <= summary["median"] <= summary["max"]
    # export and eval take the finetuned model
    hf = load_file(run / "hf" / "model.safetensors")
    ours = load_file(run / "finetune" / "checkpoints" / "step_00000004" / "model.safetensors")
    pre = load_file(run / "train" / "checkpoints" / "step_00000008" / "model.safetensors")
    emb = "transformer.word_embeddings.weight"
    assert torch.equal(hf[emb], ours["tok_embeddings.weight"])
    assert not torch.equal(hf[emb], pre["tok_embeddings.weight"])
    assert "finetune" in json.loads((run / "eval" / "results.json").read_text())["checkpoint"]
    html = (run / "report.html").read_text()
    assert 'id="finetuning"' in html and "Held-out rank evaluation" in html
    assert "tatoeba" in html and "median accuracy over prompts" in html


def test_finetune_key_reruns_finetune_and_after_only(ft_run, tmp_path, capsys):
    recipe, run = ft_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    capsys.readouterr()
    argv = ["run", str(recipe), "--out", str(copy), "--from", "tokenizer"]
    assert main(argv) == 0
    assert _ran(capsys) == []
    assert main([*argv, "finetune.train.lr=2e-3"]) == 0
    assert _ran(capsys) == ["finetune", "eval", "export", "report"]
