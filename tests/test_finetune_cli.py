"""`bloomforge finetune` end to end, the way a user runs it: a tiny model pretrained on the shared
corpus, prompted XQuAD + Tatoeba from `bloomforge mtf build`, finetuned through the CLI. Checked
against: the held-out prompted targets (log-likelihood before vs after), an uninterrupted run
(kill and resume, bitwise), transformers (the export), the init's own weights (HF folder and
checkpoint), and lm-eval running the same prompt as a local YAML task (rank evaluation)."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bloomforge.checkpoint import load_checkpoint
from bloomforge.cli import main
from bloomforge.mtf.loader import MTFLoader
from bloomforge.recipe import load_recipe
from bloomforge.training.loop import Trainer
from bloomforge.training.objective import IGNORE, MTFObjective
from token_data import SHARED, corpus_lines, write_token_folder

REPO = Path(__file__).resolve().parents[1]
PROMPTS = SHARED / "mtf" / "promptsource"
SEQ = 256


@pytest.fixture(scope="module")
def pre(tmp_path_factory):
    """A micro BLOOM pretrained for a few steps on French and Spanish UD text (byte tokens)."""
    root = tmp_path_factory.mktemp("pre")
    write_token_folder(
        root / "tokens",
        {("ud", "fr"): corpus_lines("fr", 300), ("ud", "es"): corpus_lines("es", 300)},
    )
    overrides = {
        "model": "micro",
        "data.tokens": root / "tokens",
        "data.seq_len": SEQ,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 4,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "train.warmup_tokens": 2048,
        "train.decay_tokens": 16384,
        "train.max_tokens": 16384,  # 8 steps
        "train.precision": "fp32",
        "train.save_every": 0,
        "out": root / "run",
    }
    Trainer(load_recipe(None, [f"{k}={v}" for k, v in overrides.items()])).fit()
    return root / "run"


@pytest.fixture(scope="module")
def xp3(tmp_path_factory):
    """Prompted Tatoeba (fr, es) and XQuAD (es) through `bloomforge mtf build`."""
    root = tmp_path_factory.mktemp("mtf")
    tat, xq = root / "tatoeba", root / "xquad"
    tat.mkdir()
    xq.mkdir()
    for name in ("tatoeba.fra-eng.fra", "tatoeba.fra-eng.eng", "tatoeba.spa-eng.spa",
                 "tatoeba.spa-eng.eng"):  # fmt: skip
        shutil.copy(SHARED / "corpus" / "tatoeba" / name, tat / name)
    shutil.copy(SHARED / "mtf" / "xquad" / "xquad.es.json", xq / "xquad.es.json")
    out = root / "xp3"
    argv = ["mtf", "build", "--templates", str(PROMPTS), "--task", f"tatoeba={tat}"]
    argv += ["--task", f"xquad={xq}", "--max-per-dataset", "600", "--out", str(out)]
    assert main(argv) == 0
    return out


def _finetune_args(pre: Path, xp3: Path, out: Path, **extra) -> list[str]:
    base = {
        "init": pre,
        "data.mtf": xp3,
        "data.seq_len": SEQ,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 4,
        "train.lr": 2e-3,
        "train.min_lr": 2e-3,
        "train.max_tokens": 8 * SEQ * 8,  # 8 steps
        "train.decay_tokens": 8 * SEQ * 8,
        "train.precision": "fp32",
        "train.activation_checkpointing": "false",
        "train.save_every": 2,
        "train.keep_last": 10,
        "model.hidden_dropout": 0.0,
        "model.attention_dropout": 0.0,
        "out": out,
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


RECIPE = str(REPO / "recipes" / "bloomz-560m.yaml")


@pytest.fixture(scope="module")
def ft(pre, xp3, tmp_path_factory):
    run = tmp_path_factory.mktemp("ft") / "run"
    assert main(["finetune", RECIPE, *_finetune_args(pre, xp3, run)]) == 0
    return run


def _heldout_nll(ckpt: Path, xp3: Path) -> float:
    """Mean negative log-likelihood of the held-out prompted targets (each language's last 5%)."""
    c = load_checkpoint(ckpt)
    loader = MTFLoader(xp3, c.tokenizer(), SEQ, seed=42)
    total, count = 0.0, 0
    with torch.no_grad():
        for lang in loader.groups:
            for rows in loader.validation_batches(lang, 8):
                b = MTFObjective().batch(rows)
                n = int((b.targets != IGNORE).sum())
                total += float(c.model(b.inputs, **b.forward_kwargs())) * n
                count += n
    return total / count


def test_finetune_improves_heldout_prompted_targets(pre, xp3, ft):
    before, after = _heldout_nll(pre, xp3), _heldout_nll(ft, xp3)
    assert after < before - 0.05, (before, after)
    config = load_recipe(ft / "config.yaml")
    assert config.init == str(pre) and config.data.mtf == str(xp3)
    assert config.model == load_recipe(pre / "config.yaml").model  # the shape of the init
    assert config.train.norm_target_loss and config.train.schedule == "constant"  # the recipe's
    rows = [json.loads(x) for x in (ft / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 8 and all(0.5 < r["packing"] <= 1.0 for r in train)
    valid = [r for r in rows if r["kind"] == "valid"][-1]
    assert {"es/loss", "fr/loss"} <= set(valid)


def test_finetune_kill_and_resume_is_bitwise_exact(pre, xp3, ft, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "BLOOMFORGE_FAULT": "step@5", "PYTHONPATH": str(REPO / "src")}
    args = [sys.executable, "-m", "bloomforge", "finetune", RECIPE, *_finetune_args(pre, xp3, run)]
    assert subprocess.run(args, env=env, capture_output=True).returncode == -9
    assert main(["finetune", RECIPE, *_finetune_args(pre, xp3, run), "--resume"]) == 0
    ref = load_file(ft / "checkpoints" / "step_00000008" / "model.safetensors")
    got = load_file(run / "checkpoints" / "step_00000008" / "model.safetensors")
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name


def test_export_of_the_finetuned_model_loads_in_transformers(ft, tmp_path):
    from transformers import BloomForCausalLM

    hf = tmp_path / "hf"
    assert main(["export", str(ft), str(hf)]) == 0
    ours = load_checkpoint(ft).model
    theirs = BloomForCausalLM.from_pretrained(hf).eval()
    ids = torch.tensor([[5, 70, 80, 90, 100, 33, 12]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("source", ["checkpoint", "hf"])
def test_init_weights_are_the_init_s(pre, xp3, source, tmp_path):
    """With lr 0 and no weight decay one step changes nothing: the saved weights are exactly
    the init's, from a bloomforge run folder or a Hugging Face folder."""
    init = pre
    if source == "hf":
        init = tmp_path / "hf"
        assert main(["export", str(pre), str(init)]) == 0
    run = tmp_path / "run"
    extra = {"train.lr": 0.0, "train.min_lr": 0.0, "train.weight_decay": 0.0}
    extra |= {"train.max_tokens": 8 * SEQ, "init": init}
    assert main(["finetune", RECIPE, *_finetune_args(pre, xp3, run, **extra)]) == 0
    got = load_file(run / "checkpoints" / "step_00000001" / "model.safetensors")
    ref = load_checkpoint(pre).model.state_dict()
    assert got.keys() == ref.keys()
    for name in ref:
        assert torch.equal(got[name], ref[name]), name


def test_finetune_errors_are_one_line(pre, xp3, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["finetune", RECIPE, f"data.mtf={xp3}", f"out={out}"]) == 2
    assert "init is not set" in capsys.readouterr().err
    assert main(["finetune", RECIPE, f"init={pre}", f"out={out}"]) == 2
    assert "data.mtf is not set" in capsys.readouterr().err
    argv = ["finetune", RECIPE, *_finetune_args(pre, xp3, Path(out)), "model.hidden=128"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "key 'model.hidden'" in err and "Traceback" not in err
    argv = ["finetune", RECIPE, *_finetune_args(pre, xp3, Path(out)), "parallel.pp=2"]
    assert main(argv) == 2


def test_malformed_records_are_counted_and_set_aside(pre, tmp_path):
    folder = tmp_path / "byo"
    (folder / "fr").mkdir(parents=True)  # xP3's layout: one folder per language
    lines = [
        json.dumps({"inputs": "Traduire : chat", "targets": "cat"}),
        "{not json",
        json.dumps({"inputs": "x"}),
        json.dumps({"inputs": "", "targets": "y"}),
        json.dumps({"inputs": 3, "targets": "y"}),
        json.dumps({"inputs": "Traduire : chien", "targets": "dog"}),
    ]
    (folder / "fr" / "xp3_mine.jsonl").write_text("\n".join(lines) + "\n")
    loader = MTFLoader(folder, load_checkpoint(pre).tokenizer(), 64, valid_fraction=0.0)
    assert loader.groups == ["fr"] and loader.samples("fr") == 2
    assert dict(loader.skipped.counts) == {
        "not valid JSON": 1,
        "no 'inputs' or 'targets'": 1,
        "empty 'inputs' or 'targets'": 1,
        "'inputs' or 'targets' not text": 1,
    }
    assert loader.skipped.places["not valid JSON"] == [f"{folder / 'fr' / 'xp3_mine.jsonl'}:2"]


LM_EVAL_TASK = """\
task: copa_choose
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{ premise }}}} {{% if question == \\"cause\\" %}} because... {{% else %}} so... \
{{% endif %}}\\nChoose between:\\n- {{{{choice1}}}}\\n- {{{{choice2}}}}"
doc_to_choice: "{{{{[choice1, choice2]}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def test_rank_eval_of_one_prompt_equals_lm_eval(pre, tmp_path, monkeypatch, capsys):
    """promptsource's `choose` COPA prompt through `bloomforge eval --prompts` and, rendered by
    lm-eval's own Jinja from the same template text, through lm-eval's hf model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hf = tmp_path / "hf"
    assert main(["export", str(pre), str(hf)]) == 0
    data = tmp_path / "data"
    (data / "copa").mkdir(parents=True)
    src = SHARED / "eval" / "copa" / "val.jsonl"
    first = src.read_text(encoding="utf-8").splitlines()[:24]
    (data / "copa" / "val.jsonl").write_text("\n".join(first) + "\n", encoding="utf-8")
    doc = (PROMPTS / "super_glue" / "copa" / "templates.yaml").read_text(encoding="utf-8")
    one = tmp_path / "prompts" / "templates.yaml"
    one.parent.mkdir()
    head, _, rest = doc.partition("templates:\n")
    blocks = re.split(r"\n(?=  \S+: !Template)", rest)  # one entry per template
    keep = [b for b in blocks if "\n    name: choose\n" in b]
    assert len(keep) == 1
    one.write_text(head + "templates:\n" + keep[0].rstrip("\n") + "\n", encoding="utf-8")
    out = tmp_path / "res.json"
    argv = ["eval", str(pre), "--tasks", "copa", "--prompts", str(one), "--data", str(data)]
    assert main([*argv, "--out", str(out)]) == 0
    assert "median over prompts" in capsys.readouterr().out
    ours = json.loads(out.read_text())["prompted"]["copa"]
    assert list(ours["prompts"]) == ["choose"]
    mine = ours["prompts"]["choose"]["en"]
    assert mine["n"] == 24 and ours["summary"]["en"]["median"] == mine["acc"]

    tasks = tmp_path / "lm_eval_tasks"
    tasks.mkdir()
    (tasks / "copa_choose.yaml").write_text(LM_EVAL_TASK.format(data=data / "copa" / "val.jsonl"))
    ref = simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf}",
        device="cpu",
        tasks=["copa_choose"],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        bootstrap_iters=10,
    )["results"]["copa_choose"]
    assert mine["acc"] == pytest.approx(ref["acc,none"], abs=1e-12)
    assert mine["acc_norm"] == pytest.approx(ref["acc_norm,none"], abs=1e-12)


def _zero_shot_rows(run: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "zero_shot"}


def _offline_eval(ckpt: Path, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / f"offline-{ckpt.name}.json"
    argv = ["eval", str(ckpt), "--tasks", "copa", "--data", str(SHARED / "eval"), "--limit", "6"]
    assert main([*argv, *extra, "--batch-size", "8", "--out", str(out)]) == 0
    return json.loads(out.read_text())


IN_LOOP = {
    "train.eval_tasks_every": 4,
    "eval.tasks": "[copa]",
    "eval.data": SHARED / "eval",
    "eval.limit": 6,
    "eval.prompts": f"[{PROMPTS / 'super_glue' / 'copa'}]",
}


def test_in_loop_prompted_eval_under_torchrun_equals_offline_eval(pre, xp3, tmp_path):
    """Two ranks (FSDP) run the zero-shot prompts every 4 steps without a hang; each logged
    median equals `bloomforge eval --prompts` on that step's checkpoint."""
    run = tmp_path / "run"
    args = _finetune_args(pre, xp3, run, **IN_LOOP, **{"parallel.dp": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--standalone", "-m", "bloomforge", "finetune", RECIPE, *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    logged = _zero_shot_rows(run)
    assert sorted(logged) == [4, 8]
    for step in (4, 8):
        ckpt = run / "checkpoints" / f"step_{step:08d}"
        offline = _offline_eval(ckpt, tmp_path, "--prompts", str(PROMPTS / "super_glue" / "copa"))
        summary = offline["prompted"]["copa"]["summary"]["en"]
        for key in ("median", "min", "max"):
            assert logged[step][f"copa/en/{key}"] == pytest.approx(summary[key], abs=1e-12)


def test_in_loop_eval_in_pretraining_equals_offline_eval(pre, tmp_path):
    """`bloomforge train` with eval.tasks and train.eval_tasks_every: lm-eval's COPA prompt."""
    run = tmp_path / "run"
    cfg = load_recipe(pre / "config.yaml")
    overrides = {
        "data.tokens": cfg.data.tokens,
        "data.seq_len": SEQ,
        "train.global_batch_size": 8,
        "train.micro_batch_size": 4,
        "train.max_tokens": 3 * 8 * SEQ,
        "train.decay_tokens": 3 * 8 * SEQ,
        "train.warmup_tokens": 0,
        "train.save_every": 0,
        "train.eval_tasks_every": 2,
        "eval.tasks": "[copa]",
        "eval.data": SHARED / "eval",
        "eval.limit": 6,
        "out": run,
    }
    argv = ["train", str(pre / "config.yaml"), *(f"{k}={v}" for k, v in overrides.items())]
    assert main(argv) == 0
    logged = _zero_shot_rows(run)
    assert sorted(logged) == [2, 3]  # every 2 steps and at the end
    offline = _offline_eval(run / "checkpoints" / "step_00000003", tmp_path)
    assert logged[3]["copa/acc"] == pytest.approx(offline["tasks"]["copa"]["all"]["acc"], abs=1e-12)
    from bloomforge.errors import BloomforgeError
    from bloomforge.training.zero_shot import check_supported

    for bad, message in [
        ("parallel.tp=2", "data parallelism only"),
        ("eval.data=/nonexistent", "is not a folder"),
        ("eval.tasks=[]", "eval.tasks is empty"),
        ("eval.tasks=[nope]", "nope"),
    ]:
        with pytest.raises(BloomforgeError, match=message):
            check_supported(load_recipe(pre / "config.yaml", [*argv[2:], bad]))


def test_best_fit_packing_through_the_cli_fills_rows_better(pre, xp3, ft, tmp_path):
    run = tmp_path / "run"
    args = _finetune_args(pre, xp3, run, **{"data.packing": "best_fit", "train.save_every": 0})
    assert main(["finetune", RECIPE, *args]) == 0

    def packing(r: Path) -> float:
        rows = [json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()]
        return statistics.mean(x["packing"] for x in rows if x["kind"] == "train")

    assert packing(run) > packing(ft) + 0.02
    assert load_recipe(run / "config.yaml").data.packing == "best_fit"


@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0])
def test_language_weights_follow_tokens_to_the_alpha(pre, xp3, alpha):
    """data.alpha over data.mtf's languages: p ~ tokens^alpha, and rows follow it exactly
    (Megatron's BlendableDataset)."""
    loader = MTFLoader(xp3, load_checkpoint(pre).tokenizer(), SEQ, seed=42, alpha=alpha)
    tokens = {g: loader.tokens(g) for g in loader.groups}
    raw = {g: n**alpha for g, n in tokens.items()}
    for g in loader.groups:
        assert loader.weights[g] == pytest.approx(raw[g] / sum(raw.values()), rel=1e-12)
    loader.next_batch(40)
    counts = loader.state_dict()["group_counts"]
    for g in loader.groups:
        assert abs(counts[g] - 40 * loader.weights[g]) < 1.0
    explicit = MTFLoader(xp3, load_checkpoint(pre).tokenizer(), SEQ, weights={"fr": 3, "es": 1})
    assert explicit.weights == {"es": 0.25, "fr": 0.75}


def _first_loss(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in rows if r["kind"] == "train" and r["step"] == 1)


@pytest.mark.parametrize(
    "option", ["train.norm_target_loss=false", "model.attention=prefix_lm"], ids=str
)
def test_objective_options_change_the_loss_through_the_cli(pre, xp3, ft, option, tmp_path):
    """The same first batch and weights as the `ft` run: per-token instead of per-sample
    weighting, or inputs seen both ways, each change the step-1 loss; the run records it."""
    run = tmp_path / "run"
    one_step = {"train.max_tokens": 8 * SEQ, "train.save_every": 0}
    assert main(["finetune", RECIPE, *_finetune_args(pre, xp3, run, **one_step), option]) == 0
    # the same batch and weights repeat bitwise (see the resume test): any change is the option's
    assert abs(_first_loss(run) - _first_loss(ft)) > 1e-6
    config = load_recipe(run / "config.yaml")
    key, value = option.split("=")
    section, name = key.split(".")
    assert str(getattr(getattr(config, section), name)).lower() == value
