"""The scorer against lm-eval's own HFLM on the exported model, lm-eval's rolling windows and a
float64 hand computation; lm-eval's stderr formulas."""

from __future__ import annotations

import math

import pytest
import torch

from bloomforge.cli import main
from bloomforge.evaluation import metrics as M
from bloomforge.evaluation.scoring import Scorer, rolling_windows

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")
from lm_eval.api.instance import Instance  # noqa: E402

MAX_LEN = 24  # a short context so rolling windows and left truncation are exercised

PAIRS = [
    ("The man turned on the faucet", " because water flowed."),
    ("Le chat dort ", "sur le canapé"),  # trailing space moves into the continuation
    ("", "Hello world"),  # empty context: conditioned on the prefix token
    ("我想节约能源", "，所以关灯"),
    ("a" * 40, " b"),  # longer than the context: truncated from the left
    ("Die Frau", " ging in Rente."),
    ("Die Frau", " ging"),  # choices sharing a context run it once (KV cache)
    ("Die Frau", "en gingen"),  # with merges "Frauen" may re-tokenize: then not shared
    ("Die Frau ", "ging"),  # same tokens as the first "Die Frau" pair after the space moves
    ("x", " y"),  # one-token contexts shared: nothing before the last context token
    ("x", "yz"),
]
TEXTS = ["Ceplerimi boşalttım ve bir bilet koçanı aldım. " * 3, "short", "x" * MAX_LEN]


def _bpe_tokenizer(path):
    """A small trained byte-level BPE (merges across letters and a leading space, as BLOOM's),
    BLOOM's special tokens at ids 0-3: exercises lm-eval's whole-encode-then-split rule."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [a + b for a, b in PAIRS] + TEXTS + ["the man turned, the water flowed"] * 3
    tok.train_from_iterator(corpus, trainer)
    tok.save(str(path))
    return tok.get_vocab_size()


@pytest.fixture(scope="module", params=["bytes", "bpe"])
def ckpt(request, tmp_path_factory):
    # the model's vocabulary padded exactly to the tokenizer's, so both normalize_over options
    # agree (test_eval_fixes covers padded rows); a wide init makes the distributions peaked, so
    # a mismatch of one token shows.
    folder = tmp_path_factory.mktemp("eval")
    args = ["init_std=0.2", f"max_seq_len={MAX_LEN}", "pad_vocab_multiple=1"]
    if request.param == "bytes":
        args += ["vocab_size=260"]
    else:
        args += [f"vocab_size={_bpe_tokenizer(folder / 'tok.json')}"]
        args += ["--tokenizer", str(folder / "tok.json")]
    assert main(["model", "init", "micro", str(folder / "ck"), *args]) == 0
    return folder / "ck"


@pytest.fixture(scope="module")
def scorer(ckpt):
    from bloomforge.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    return Scorer(c.model, c.tokenizer(), batch_size=3)


def _hflm_class():
    """lm-eval's HFLM. It imports `accelerate` at module level but never calls it when given a
    model instance; where accelerate is not installed, stand-ins that fail loudly if used."""
    import importlib.util
    import sys
    import types

    if "accelerate" not in sys.modules and importlib.util.find_spec("accelerate") is None:

        def unused(*args, **kwargs):
            raise RuntimeError("accelerate is not installed")

        fake, utils = types.ModuleType("accelerate"), types.ModuleType("accelerate.utils")
        fake.Accelerator = fake.InitProcessGroupKwargs = fake.find_executable_batch_size = unused
        utils.get_max_memory = unused
        fake.utils = utils
        sys.modules.setdefault("accelerate", fake)
        sys.modules.setdefault("accelerate.utils", utils)
    from lm_eval.models.huggingface import HFLM

    return HFLM


@pytest.fixture(scope="module")
def hflm(ckpt, tmp_path_factory):
    HFLM = _hflm_class()

    hf_dir = tmp_path_factory.mktemp("hf") / "m"
    assert main(["export", str(ckpt), str(hf_dir)]) == 0
    model = transformers.BloomForCausalLM.from_pretrained(hf_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    return HFLM(pretrained=model, tokenizer=tok, batch_size=2, max_length=MAX_LEN, device="cpu")


def _instances(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def test_loglikelihood_matches_lm_eval_hflm(scorer, hflm):
    from bloomforge.evaluation.harness import BloomforgeLM

    ours = BloomforgeLM(scorer=scorer).loglikelihood(_instances("loglikelihood", PAIRS))
    ref = hflm.loglikelihood(_instances("loglikelihood", PAIRS))
    for (ll, greedy), (ref_ll, ref_greedy), pair in zip(ours, ref, PAIRS, strict=True):
        assert ll == pytest.approx(ref_ll, abs=1e-4), pair
        assert greedy == ref_greedy, pair
    assert all(ll < 0 for ll, _ in ours)


def test_rolling_loglikelihood_matches_lm_eval_hflm(scorer, hflm):
    from bloomforge.evaluation.harness import BloomforgeLM

    args = [(t,) for t in TEXTS]
    ours = BloomforgeLM(scorer=scorer).loglikelihood_rolling(_instances("rolling", args))
    ref = hflm.loglikelihood_rolling(_instances("rolling", args))
    assert ours == pytest.approx(ref, abs=1e-4)


def test_greedy_generation_matches_lm_eval_hflm(scorer, hflm):
    from bloomforge.evaluation.harness import BloomforgeLM

    args = [("The cat", {"until": ["e"], "max_gen_toks": 6}), ("ab", {"max_gen_toks": 5})]
    ours = BloomforgeLM(scorer=scorer).generate_until(_instances("generate_until", args))
    ref = hflm.generate_until(_instances("generate_until", args))
    assert ours == ref
    assert "e" not in ours[0]


@pytest.mark.parametrize("n", [1, 5, 23, 24, 25, 48, 50, 97])
def test_rolling_windows_are_lm_eval_windows(n):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    tokens = list(range(10, 10 + n))
    ref = [
        make_disjoint_window(w)
        for w in get_rolling_token_windows(tokens, prefix_token=1, max_seq_len=24, context_len=1)
    ]
    ours = rolling_windows(tokens, 1, 24)
    assert ours == [(list(a), list(b)) for a, b in ref]
    assert sum(len(c) for _, c in ours) == n


def test_perplexity_against_float64_hand_computation(scorer):
    text = "Le chat dort."  # 13 bytes, fits in one window
    model = scorer.model
    ids = [scorer.prefix_id, *scorer.encode(text)]
    with torch.no_grad():
        logits = model.double()(torch.tensor([ids]))[0, :-1, : scorer.vocab_limit]
        model.float()
    logp = torch.log_softmax(logits, dim=-1)
    expected = float(sum(logp[i, t] for i, t in enumerate(ids[1:])))
    [(ll, n)] = scorer.loglikelihood_rolling([text])
    assert n == len(ids) - 1 and ll == pytest.approx(expected, abs=1e-4)
    m = M.rolling_metrics(ll, n, 13, 3)
    assert m["bits_per_byte"] == pytest.approx(-expected / 13 / math.log(2), abs=1e-5)
    assert m["token_perplexity"] == pytest.approx(math.exp(-expected / n), rel=1e-4)
    assert m["word_perplexity"] == pytest.approx(math.exp(-expected / 3), rel=1e-4)


@pytest.mark.parametrize(("batch_size", "share"), [(1, False), (2, True), (7, True)])
def test_batching_and_context_sharing_do_not_change_scores(ckpt, batch_size, share):
    from bloomforge.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    plain = Scorer(c.model, c.tokenizer(), batch_size=16, share_context=False)
    ours = Scorer(c.model, c.tokenizer(), batch_size=batch_size, share_context=share)
    pairs = PAIRS + [(f"Le chat{'!' * k}", f" dort{'.' * k}") for k in range(4)]
    for (a, ga), (b, gb) in zip(plain.loglikelihood(pairs), ours.loglikelihood(pairs), strict=True):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb
    groups, _ = ours._context_groups([ours.encode_pair(*p) for p in pairs])
    assert len(groups) >= 2  # at least "Die Frau" and "x" are shared


def test_stderr_formulas_are_lm_eval_s():
    from lm_eval.api.metrics import mean_stderr, perplexity, pooled_sample_stderr

    xs = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert M.mean_stderr(xs) == pytest.approx(mean_stderr(xs), rel=1e-12)
    errs, sizes = [0.1, 0.05, 0.2], [10, 40, 7]
    assert M.pooled_stderr(errs, sizes) == pytest.approx(
        float(pooled_sample_stderr(errs, sizes)), rel=1e-12
    )
    lls = [-1.5, -0.25, -3.0]
    assert M.perplexity(lls) == pytest.approx(perplexity(lls), rel=1e-12)
    # acc_norm divides by characters (-6/3 < -5/4), acc_bytes by UTF-8 bytes (-6/6 > -5/4).
    scores = M.choice_metrics([-6.0, -5.0], ["ééé", "abcd"], gold=0)
    assert scores == {"acc": 0.0, "acc_norm": 0.0, "acc_bytes": 1.0}


def test_auto_batch_size_halves_on_out_of_memory(ckpt, monkeypatch):
    from bloomforge.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    ref = Scorer(c.model, c.tokenizer(), batch_size=1, share_context=False).loglikelihood(PAIRS)
    auto = Scorer(c.model, c.tokenizer(), batch_size="auto", share_context=False)
    real = auto._score_batch

    def small_memory(batch):  # a device that holds at most 3 rows
        if len(batch) > 3:
            raise torch.OutOfMemoryError("simulated")
        return real(batch)

    monkeypatch.setattr(auto, "_score_batch", small_memory)
    got = auto.loglikelihood(PAIRS)
    assert auto._found_batch == 2  # 16 (CPU start) -> 8 -> 4 -> 2
    for (a, ga), (b, gb) in zip(ref, got, strict=True):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb


def test_logits_in_chunks_give_the_same_scores(scorer, monkeypatch):
    from bloomforge.evaluation import scoring

    whole = scorer.loglikelihood(PAIRS)
    monkeypatch.setattr(scoring, "LOGITS_CHUNK", 3 * scorer.vocab_limit)  # 3 positions a chunk
    chunked = scorer.loglikelihood(PAIRS)
    assert [ll for ll, _ in chunked] == pytest.approx([ll for ll, _ in whole], abs=1e-5)
    assert [g for _, g in chunked] == [g for _, g in whole]
