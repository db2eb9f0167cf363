"""Task templates against lm-eval's task code, and `bloomforge eval` against lm-eval's
`simple_evaluate` running our model class on the same local task."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from bloomforge.cli import main
from bloomforge.evaluation.builtin_tasks import XCOPA_CONNECTIVES
from bloomforge.evaluation.tasks import get_task, load_task_file

lm_eval = pytest.importorskip("lm_eval")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
MINI = Path(__file__).resolve().parent / "data" / "eval_mini.jsonl"
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


def _lm_eval_module(rel: str):
    """A task helper module of the installed lm-eval (its `!function` utils), loaded by path."""
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_"), LM_EVAL_TASKS / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _records(path: Path, n: int | None = None) -> list[dict]:
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return lines[:n]


@pytest.fixture(scope="module", autouse=True)
def _need_data():
    if not DATA.is_dir():
        pytest.skip("shared/data/eval not found")


def test_xcopa_strings_are_lm_eval_s_for_each_language_and_connective():
    utils = _lm_eval_module("xcopa/utils.py")
    spec = get_task("xcopa")
    for lang in XCOPA_CONNECTIVES:
        records = _records(DATA / "xcopa" / f"test.{lang}.jsonl")
        for question in ("cause", "effect"):
            # every Thai record says "effect" (as upstream XCOPA ships it): relabel one for "cause"
            rec = next((r for r in records if r["question"] == question), None)
            rec = rec or {**records[0], "question": question}
            ex = spec.example(rec, lang, "test")
            ctx = getattr(utils, f"doc_to_text_{lang}")(rec)
            choices = utils.doc_to_choice(rec)
            # lm-eval's multiple_choice request: (doc_to_text, target_delimiter + choice)
            assert ex.contexts == [ctx, ctx]
            assert ex.continuations == [" " + c for c in choices]
            assert ex.gold == rec["label"]


def test_xcopa_hand_checked_examples():
    spec = get_task("xcopa")
    et = _records(DATA / "xcopa" / "test.et.jsonl", 1)[0]  # a "cause" question
    ex = spec.example(et, "et", "")
    assert ex.contexts[0] == "Ese oli mullikilesse mässitud sest"
    assert ex.continuations == [" see oli õrn.", " see oli väike."]
    zh = _records(DATA / "xcopa" / "test.zh.jsonl", 2)[1]  # an "effect" question
    ex = spec.example(zh, "zh", "")
    assert ex.contexts[0] == "我掏空了口袋 所以"
    assert ex.continuations == [" 我找到了一张票根。", " 我找到了一件武器。"]


def test_copa_hellaswag_lambada_winogrande_strings():
    copa_utils = _lm_eval_module("super_glue/copa/utils.py")
    for rec in _records(DATA / "copa" / "val.jsonl", 4):
        ex = get_task("copa").example(rec, "en", "")
        assert ex.contexts[0] == copa_utils.doc_to_text(rec)
        assert ex.continuations == [" " + c for c in copa_utils.doc_to_choice(rec)]
        assert ex.choices[ex.gold] == copa_utils.doc_to_target(rec)
    hs = get_task("hellaswag").read(DATA, limit=2)["en"]
    # lm-eval: preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())
    assert hs[0].contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs[0].continuations[3] == " starts pulling up roofing on a roof." and hs[0].gold == 3
    assert hs[1].contexts[0] == (
        "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"
    )
    wikihow = {"ind": 9, "activity_label": "Hair", "ctx": "Pick one. You can use a gel.",
               "query": "", "label": 0, "endings": ["a", "b"]}  # fmt: skip
    ex = get_task("hellaswag").example(wikihow, "en", "")
    assert ex.contexts[0] == "Hair: Pick one. You can use a gel."
    # LAMBADA: lm-eval's split of {text} equals llm-foundry's independent {context, continuation}.
    ours = get_task("lambada").read(DATA, limit=50)["en"]
    ref = _records(DATA / "lambada" / "lambada_openai.llmfoundry.jsonl", 50)
    for ex, r in zip(ours, ref, strict=True):
        assert (ex.contexts[0], ex.continuations[0]) == (r["context"], " " + r["continuation"])
    wg = get_task("winogrande").read(DATA, limit=1)["en"][0]
    assert wg.contexts == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert wg.continuations == [" always got the easier cases."] * 2 and wg.gold == 1


LM_EVAL_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: {kind}
validation_split: validation
doc_to_text: {text}
doc_to_target: {target}
{extra}
metric_list:
{metrics}
"""


def _write_tasks(folder: Path) -> tuple[Path, Path]:
    """The same two local tasks for lm-eval (YAML + jinja) and for bloomforge (YAML)."""
    folder.mkdir()
    mc = dict(
        name="bf_mini_mc",
        kind="multiple_choice",
        text='"{{premise}} Therefore"',
        target="label",
        extra='doc_to_choice: "{{[choice1, choice2]}}"',
        metrics="  - metric: acc\n  - metric: acc_norm",
    )
    ll = dict(
        name="bf_mini_ll",
        kind="loglikelihood",
        text="\"{{text.split(' ')[:-1]|join(' ')}}\"",
        target="\"{{' '+text.split(' ')[-1]}}\"",
        extra="",
        metrics="  - metric: perplexity\n  - metric: acc",
    )
    for t in (mc, ll):
        (folder / f"{t['name']}.yaml").write_text(LM_EVAL_YAML.format(data=MINI, **t))
    ours = folder.parent / "bloomforge_tasks"
    ours.mkdir()
    mc_file, ll_file = ours / "mc.yaml", ours / "ll.yaml"
    mc_file.write_text(
        "name: bf_mini_mc\nfiles: eval_mini.jsonl\ncontext: '{premise} Therefore'\n"
        "choices: ['{choice1}', '{choice2}']\ngold: label\n"
    )
    ll_file.write_text(
        "name: bf_mini_ll\nfiles: {en: eval_mini.jsonl}\nkind: loglikelihood\n"
        "context: '{prefix}'\ntarget: ' {last}'\n"
    )
    return mc_file, ll_file


@dataclass
class MiniTasks:
    """bf_mini_mc (multiple choice: acc, acc_norm) and bf_mini_ll (loglikelihood: acc,
    perplexity) on tests/data/eval_mini.jsonl, for lm-eval and for `bloomforge eval`."""

    lm_eval_dir: Path  # lm-eval task YAMLs (`--include_path`)
    task_files: tuple[Path, Path]  # bloomforge task YAMLs (`--task-file`)
    data: Path  # bloomforge's `--data`

    @property
    def eval_args(self) -> list[str]:
        """`bloomforge eval` arguments running both tasks."""
        mc, ll = self.task_files
        return ["--tasks", "bf_mini_mc,bf_mini_ll", "--data", str(self.data),
                "--task-file", str(mc), "--task-file", str(ll)]  # fmt: skip

    def task_manager(self):
        from lm_eval.tasks import TaskManager

        return TaskManager(include_path=str(self.lm_eval_dir), include_defaults=False)


def mini_tasks(tmp_path: Path) -> MiniTasks:
    lm_eval_dir = tmp_path / "lm_eval_tasks"
    files = _write_tasks(lm_eval_dir)
    # the loglikelihood task's fields come from lm-eval's jinja split, done here by hand
    data = tmp_path / "data"
    data.mkdir()
    with (data / "eval_mini.jsonl").open("w", encoding="utf-8") as f:
        for r in _records(MINI):
            words = r["text"].split(" ")
            r |= {"prefix": " ".join(words[:-1]), "last": words[-1]}
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return MiniTasks(lm_eval_dir, files, data)


def test_bloomforge_eval_and_lm_eval_give_identical_scores(tmp_path, monkeypatch):
    from lm_eval import simple_evaluate

    from bloomforge.evaluation.harness import BloomforgeLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260", "init_std=0.2"]) == 0
    mini = mini_tasks(tmp_path)
    out = tmp_path / "res.json"
    argv = ["eval", str(ck), *mini.eval_args, "--out", str(out)]
    assert main([*argv, "--batch-size", "3"]) == 0
    ours = json.loads(out.read_text())["tasks"]

    lm = BloomforgeLM(checkpoint=str(ck), batch_size=5)
    ref = simple_evaluate(
        model=lm,
        tasks=["bf_mini_mc", "bf_mini_ll"],
        task_manager=mini.task_manager(),
        bootstrap_iters=10,
    )["results"]
    mc, ll = ours["bf_mini_mc"]["all"], ours["bf_mini_ll"]["all"]
    assert mc["n"] == ll["n"] == 8
    for metric in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
        assert mc[metric] == pytest.approx(ref["bf_mini_mc"][f"{metric},none"], abs=1e-12)
    assert ll["acc"] == pytest.approx(ref["bf_mini_ll"]["acc,none"], abs=1e-12)
    assert ll["perplexity"] == pytest.approx(ref["bf_mini_ll"]["perplexity,none"], rel=1e-6)


def test_eval_command_runs_builtin_tasks_and_perplexity(tmp_path, capsys):
    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260"]) == 0
    text = tmp_path / "fr.txt"
    text.write_text("Le chat dort.\nIl pleut.\n", encoding="utf-8")
    out = tmp_path / "r.json"
    argv = ["eval", str(ck), "--tasks", "xcopa,copa,hellaswag,lambada,winogrande"]
    argv += ["--data", str(DATA), "--limit", "2", "--perplexity", f"fr={text}", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["tasks"]["xcopa"]["subsets"]) == set(XCOPA_CONNECTIVES)
    assert res["tasks"]["xcopa"]["all"]["n"] == 22
    assert set(res["tasks"]["lambada"]["all"]) >= {"acc", "perplexity", "perplexity_stderr"}
    fr = res["perplexity"]["fr"]
    assert (fr["documents"], fr["bytes"], fr["tokens"]) == (2, 22, 22)  # byte-level tokens
    assert "xcopa" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "xcopaa", "--data", "."], "unknown task 'xcopaa' (did you mean 'xcopa'?)"),
        (["--tasks", "copa"], "--tasks needs --data"),
        (["--tasks", "copa", "--data", "/nonexistent"], "task file not found"),
        ([], "nothing to do"),
    ],
)
def test_eval_command_errors(tmp_path, capsys, argv, message):
    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260"]) == 0
    assert main(["eval", str(ck), *argv]) == 2
    assert message in capsys.readouterr().err


def test_task_file_errors(tmp_path):
    from bloomforge.errors import BloomforgeError

    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nfiles: x.jsonl\ncontxt: '{a}'\nchoices: c\n")
    with pytest.raises(BloomforgeError, match="unknown key 'contxt' \\(did you mean 'context'"):
        load_task_file(bad)
    good = tmp_path / "g.yaml"
    good.write_text("name: g\nfiles: x.jsonl\ncontext: '{a}'\nchoices: c\ngold: y\n")
    spec = load_task_file(good)
    with pytest.raises(BloomforgeError, match="'y'=5 is not a choice index"):
        spec.example({"a": "q", "c": ["x", "y"], "y": 5}, "all", "f:1")
    with pytest.raises(BloomforgeError, match="f:1: record has no field 'a'"):
        spec.example({"c": ["x"], "y": 0}, "all", "f:1")


GEN_YAML = """\
task: bf_mini_gen
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: generate_until
validation_split: validation
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def test_generate_task_exact_match_same_in_lm_eval(tmp_path, monkeypatch):
    import torch
    import transformers
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from bloomforge.evaluation.harness import BloomforgeLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ck, hf_dir = tmp_path / "ck", tmp_path / "hf"
    args = ["vocab_size=260", "pad_vocab_multiple=4", "init_std=0.2"]
    assert main(["model", "init", "micro", str(ck), *args]) == 0
    assert main(["export", str(ck), str(hf_dir)]) == 0
    model = transformers.BloomForCausalLM.from_pretrained(hf_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    # targets from transformers' own greedy generation (independent of our code) for half the
    # prompts, a string no 4-token generation equals for the other half: exact_match = 0.5
    data = tmp_path / "gen.jsonl"
    with data.open("w", encoding="utf-8") as f:
        for i, rec in enumerate(_records(MINI)):
            ids = tok(rec["premise"]).input_ids
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
            text = tok.decode(out[0, len(ids) :], skip_special_tokens=True).split("\n\n")[0]
            target = text if i % 2 == 0 else "not generated at all"
            f.write(json.dumps({"prompt": rec["premise"], "target": target}) + "\n")
    (tmp_path / "lm_tasks").mkdir()
    (tmp_path / "lm_tasks" / "gen.yaml").write_text(GEN_YAML.format(data=data))
    task = tmp_path / "gen_task.yaml"
    task.write_text(
        "name: bf_mini_gen\nfiles: gen.jsonl\nkind: generate\ncontext: '{prompt}'\n"
        "target: '{target}'\nuntil: ['\\n\\n']\nmax_new_tokens: 4\n"
    )
    out = tmp_path / "r.json"
    argv = ["eval", str(ck), "--task-file", str(task), "--tasks", "bf_mini_gen"]
    assert main([*argv, "--data", str(tmp_path), "--out", str(out)]) == 0
    ours = json.loads(out.read_text())["tasks"]["bf_mini_gen"]["all"]
    ref = simple_evaluate(
        model=BloomforgeLM(checkpoint=str(ck)),
        tasks=["bf_mini_gen"],
        task_manager=TaskManager(include_path=str(tmp_path / "lm_tasks"), include_defaults=False),
    )["results"]["bf_mini_gen"]
    assert ours["exact_match"] == 0.5 == ref["exact_match,none"]
