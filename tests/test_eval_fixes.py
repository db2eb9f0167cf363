"""Issue 15, run the way users run it: lm-eval's CLI with `--model bloomforge` and no device,
scores equal to lm-eval's hf backend on a padded vocabulary, prefix-LM prompts as prefixes.

References: lm-eval's `--model hf` on the exported folder (transformers' BloomForCausalLM);
float64 forwards of the model with an explicit `prefix_len`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from bloomforge.cli import main
from bloomforge.evaluation.scoring import Scorer

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's hf backend imports it
from lm_eval.api.instance import Instance  # noqa: E402

from test_eval_tasks import mini_tasks  # noqa: E402

# --- 1. `bloomforge-lm-eval` without --device on a machine without a GPU ------------------------


def _lm_eval_cli(argv: list[str], out: Path, monkeypatch) -> dict:
    """lm-eval's command line as `bloomforge-lm-eval` runs it; its results json."""
    from lm_eval.tasks import TaskManager

    from bloomforge.evaluation.lm_eval_cli import main as lm_eval_main

    # The CLI indexes lm-eval's ~10k bundled task YAMLs (25 s here); these tests need only
    # --include_path's, so skip the bundled ones. Nothing else of the CLI is changed.
    real_init = TaskManager.__init__

    def local_tasks_only(self, *args, **kwargs):
        real_init(self, *args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(TaskManager, "__init__", local_tasks_only)
    monkeypatch.setattr(sys, "argv", ["bloomforge-lm-eval", *argv, "--output_path", str(out)])
    lm_eval_main()
    [path] = out.rglob("results_*.json")
    return json.loads(path.read_text())["results"]


def test_lm_eval_cli_without_device_falls_back_like_hf(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ck, hf_dir = tmp_path / "ck", tmp_path / "hf"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260", "init_std=0.2"]) == 0
    assert main(["export", str(ck), str(hf_dir)]) == 0
    mini = mini_tasks(tmp_path)
    tasks = ["--tasks", "bf_mini_mc,bf_mini_ll", "--include_path", str(mini.lm_eval_dir)]
    # exactly as the README shows it: no --device (lm-eval then passes its default, cuda:0)
    ours = _lm_eval_cli(
        ["--model", "bloomforge", "--model_args", f"checkpoint={ck}", *tasks],
        tmp_path / "ours",
        monkeypatch,
    )
    ref = _lm_eval_cli(
        ["--model", "hf", "--model_args", f"pretrained={hf_dir}", *tasks],
        tmp_path / "ref",
        monkeypatch,
    )
    for metric in ("acc,none", "acc_norm,none", "acc_stderr,none", "acc_norm_stderr,none"):
        assert ours["bf_mini_mc"][metric] == pytest.approx(ref["bf_mini_mc"][metric], abs=1e-12)
    assert ours["bf_mini_ll"]["acc,none"] == ref["bf_mini_ll"]["acc,none"]
    ppl = ours["bf_mini_ll"]["perplexity,none"]
    assert ppl == pytest.approx(ref["bf_mini_ll"]["perplexity,none"], rel=1e-5)


def test_lm_eval_model_device_cuda_without_cuda_is_a_one_line_error(tmp_path, monkeypatch):
    from bloomforge.errors import BloomforgeError
    from bloomforge.evaluation.harness import BloomforgeLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260"]) == 0
    with pytest.raises(BloomforgeError, match=r"^device=cuda: CUDA is not available") as err:
        BloomforgeLM(checkpoint=str(ck), device="cuda")
    assert "\n" not in str(err.value)
    # lm-eval's own default (cuda:0) and no device at all fall back to the CPU, as hf does
    for device in ("cuda:0", None):
        assert BloomforgeLM(checkpoint=str(ck), device=device).scorer.device == "cpu"


def test_lm_eval_cli_device_cuda_without_cuda_exits_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260"]) == 0
    mini = mini_tasks(tmp_path)
    argv = ["--model", "bloomforge", "--model_args", f"checkpoint={ck}", "--device", "cuda"]
    argv += ["--tasks", "bf_mini_mc", "--include_path", str(mini.lm_eval_dir)]
    with pytest.raises(SystemExit) as exit_:
        _lm_eval_cli(argv, tmp_path / "out", monkeypatch)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bloomforge-lm-eval: device=cuda: CUDA is not available")
    assert "Traceback" not in "\n".join(err)


# --- 2. log-softmax over all logits (padded vocabulary), as transformers and lm-eval's hf ---------


def _instances(pairs: list[tuple[str, str]]) -> list[Instance]:
    return [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]


def test_padded_vocabulary_scores_equal_lm_eval_hf(tmp_path, monkeypatch):
    from lm_eval import simple_evaluate

    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.evaluation.harness import BloomforgeLM

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ck, hf_dir = tmp_path / "ck", tmp_path / "hf"
    # 260 tokens in 384 rows (BLOOM: 250680 in 250880); the padded rows are random, as trained
    # BLOOM's are not zero either, so normalising over them or not changes every score.
    args = ["vocab_size=260", "pad_vocab_multiple=128", "init_std=0.2"]
    assert main(["model", "init", "micro", str(ck), *args]) == 0
    c = load_checkpoint(ck)
    assert c.model.cfg.padded_vocab_size == 384 and c.tokenizer().get_vocab_size() == 260
    assert float(c.model.output_weight.detach()[260:].abs().min()) > 0
    assert main(["export", str(ck), str(hf_dir)]) == 0
    mini = mini_tasks(tmp_path)

    def bloomforge_eval(*extra: str) -> dict:
        out = tmp_path / f"res{len(extra)}.json"
        assert main(["eval", str(ck), *mini.eval_args, "--out", str(out), *extra]) == 0
        return json.loads(out.read_text())

    ours = bloomforge_eval()
    assert ours["config"]["normalize_over"] == "logits"
    ref = simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf_dir}",
        device="cpu",
        tasks=["bf_mini_mc", "bf_mini_ll"],
        task_manager=mini.task_manager(),
        bootstrap_iters=10,
    )["results"]
    mc, ll = ours["tasks"]["bf_mini_mc"]["all"], ours["tasks"]["bf_mini_ll"]["all"]
    for metric in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
        assert mc[metric] == pytest.approx(ref["bf_mini_mc"][f"{metric},none"], abs=1e-12)
    assert ll["acc"] == ref["bf_mini_ll"]["acc,none"]
    assert ll["perplexity"] == pytest.approx(ref["bf_mini_ll"]["perplexity,none"], rel=1e-5)

    # per request, through the lm-eval model (its default too) and lm-eval's HFLM
    from lm_eval.models.huggingface import HFLM

    pairs = [("The man turned on the faucet", " because water flowed."), ("", "Hello"),
             ("Die Frau", " ging in Rente."), ("Die Frau", " ging")]  # fmt: skip
    got = BloomforgeLM(checkpoint=str(ck), batch_size=2).loglikelihood(_instances(pairs))
    hf = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=2).loglikelihood(_instances(pairs))
    for (a, ga), (b, gb) in zip(got, hf, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb

    # the tokenizer-vocabulary normalisation stays available, and it does change the numbers
    tok = bloomforge_eval("--normalize-over", "tokenizer")
    assert tok["config"]["normalize_over"] == "tokenizer"
    ppl_tok = tok["tasks"]["bf_mini_ll"]["all"]["perplexity"]
    assert ppl_tok < ll["perplexity"] * (1 - 1e-3)  # fewer rows in the softmax: higher probs
    lm_tok = BloomforgeLM(checkpoint=str(ck), normalize_over="tokenizer", batch_size=2)
    for (a, _), (b, _) in zip(lm_tok.loglikelihood(_instances(pairs)), got, strict=True):
        assert a > b + 1e-3


# --- 3. prefix-LM: the context / prompt is the prefix ---------------------------------------------

PREFIX_PAIRS = [
    ("The man turned on the faucet", " because water flowed."),
    ("Die Frau", " ging in Rente."),  # shared contexts of different lengths: left padding
    ("Die Frau", " ging"),
    ("Le chat dort sur le", " canapé"),
    ("Le chat dort sur le", " lit"),
    ("x", " y"),  # a one-token context: prefix and causal agree
    ("", "Hello"),
    ("abcdefghij" * 30, " k"),  # longer than the context window: truncated from the left
]


@pytest.fixture(scope="module")
def prefix_ckpt(tmp_path_factory):
    ck = tmp_path_factory.mktemp("prefix") / "ck"
    args = ["vocab_size=260", "init_std=0.2", "attention=prefix_lm", "pad_vocab_multiple=128"]
    assert main(["model", "init", "micro", str(ck), *args]) == 0
    return ck


def _hand_ll(model, ctx: list[int], cont: list[int], max_len: int, prefix: bool) -> float:
    """float64: log p(cont | ctx) from one forward of ctx + cont[:-1] (left-truncated to
    max_len), with prefix_len = the context's columns or without it (plain causal)."""
    whole = (ctx + cont)[-(max_len + 1) :][:-1]
    n_ctx = len(ctx) - (len(ctx) + len(cont) - 1 - len(whole))
    kw = {"prefix_len": torch.tensor([n_ctx])} if prefix else {}
    logits = model(torch.tensor([whole]), **kw)[0].double()
    logp = torch.log_softmax(logits, dim=-1)[len(whole) - len(cont) :]
    return float(sum(logp[i, t] for i, t in enumerate(cont)))


@pytest.mark.parametrize("share", [True, False])
def test_prefix_lm_scoring_uses_the_context_as_prefix(prefix_ckpt, share):
    from bloomforge.checkpoint import load_checkpoint

    c = load_checkpoint(prefix_ckpt)
    scorer = Scorer(c.model, c.tokenizer(), batch_size=4, share_context=share)
    requests = [scorer.encode_pair(*p) for p in PREFIX_PAIRS]
    if share:
        assert len(scorer._context_groups(requests)[0]) == 2  # "Die Frau", "Le chat dort sur le"
    with torch.inference_mode():  # as a caller may wrap it; the scorer runs under no_grad itself
        got = scorer.loglikelihood(PREFIX_PAIRS)
    model = c.model.double()
    with torch.no_grad():
        for (ll, _), (ctx, cont), pair in zip(got, requests, PREFIX_PAIRS, strict=True):
            expected = _hand_ll(model, ctx, cont, scorer.max_length, prefix=True)
            assert ll == pytest.approx(expected, abs=1e-4), pair
            causal = _hand_ll(model, ctx, cont, scorer.max_length, prefix=False)
            if len(ctx) > 1:
                assert abs(causal - expected) > 1e-3, pair  # the prefix matters here


def test_prefix_lm_lm_eval_model(prefix_ckpt):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.evaluation.harness import BloomforgeLM

    lm = BloomforgeLM(checkpoint=str(prefix_ckpt), batch_size=3)
    with torch.inference_mode():
        got = lm.loglikelihood(_instances(PREFIX_PAIRS[:3]))
    c = load_checkpoint(prefix_ckpt)
    model = c.model.double()
    with torch.no_grad():
        for (ll, _), pair in zip(got, PREFIX_PAIRS[:3], strict=True):
            ctx, cont = lm.scorer.encode_pair(*pair)
            expected = _hand_ll(model, ctx, cont, lm.max_length, prefix=True)
            assert ll == pytest.approx(expected, abs=1e-4)


def test_prefix_lm_generation_prompt_is_the_prefix(prefix_ckpt):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate
    from helpers import left_padded

    model = load_checkpoint(prefix_ckpt).model.eval()
    pads, T = [0, 3, 5], 8
    ids, mask = left_padded(3, T, 260, pads, seed=1)
    first: list[torch.Tensor] = []
    hook = model.register_forward_hook(lambda m, a, out: first.append(out[:, -1]) or None)
    try:
        with torch.inference_mode():
            out = generate(model, ids, mask, Sampling(max_new_tokens=6))
    finally:
        hook.remove()
    with torch.no_grad():
        for row, pad in enumerate(pads):
            prompt = ids[row : row + 1, pad:]
            n = torch.tensor([T - pad])
            ref = model(prompt, prefix_len=n)[0, -1]
            torch.testing.assert_close(first[0][row], ref, rtol=1e-4, atol=1e-4)
            causal = model(prompt)[0, -1]
            assert (causal - ref).abs().max() > 1e-2  # the prefix matters for this prompt
            # every later token: causal after the prompt, recomputed without a cache
            seq = prompt
            for _ in range(out.shape[1] - T):
                nxt = model(seq, prefix_len=n)[0, -1].argmax()
                seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
            assert torch.equal(out[row, T:], seq[0, T - pad :])
    no_cache = generate(model, ids, mask, Sampling(max_new_tokens=6), use_cache=False)
    assert torch.equal(out, no_cache)


def test_causal_models_get_no_prefix(tmp_path):
    """A causal model never receives prefix_len (its forward rejects one)."""
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate_text

    ck = tmp_path / "ck"
    assert main(["model", "init", "micro", str(ck), "vocab_size=260"]) == 0
    c = load_checkpoint(ck)
    seen = []
    hook = c.model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("prefix_len")), with_kwargs=True
    )
    scorer = Scorer(c.model, c.tokenizer(), batch_size=2)
    scorer.loglikelihood(PREFIX_PAIRS)
    generate_text(c.model, c.tokenizer(), ["Le chat"], Sampling(max_new_tokens=3))
    hook.remove()
    assert seen and all(p is None for p in seen)
