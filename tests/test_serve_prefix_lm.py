"""`bloomforge serve` on a prefix-LM model (`attention: prefix_lm`): the prompt is the prefix, as
`bloomforge generate` and `bloomforge eval` treat it. References: the library `generate_text`
(greedy continuations) and eval's `Scorer` (log-likelihood of a continuation given its context
as the prefix); a causal reading of the same weights scores differently (the mask matters)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from test_serve import LiveServer
from test_serve_batching import checkpoint, complete

httpx = pytest.importorskip("httpx")

PROMPTS = ["Le chat est", "A", "Der Hund läuft schnell", "日本語"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.serve import load_engine
    from bloomforge.serve.app import create_app
    from bloomforge.serve.engine import Limits

    ckpt = checkpoint(tmp_path_factory.mktemp("plm") / "ck", "attention=prefix_lm")
    engine = load_engine(ckpt, limits=Limits(max_batch=8, max_tokens=32))
    assert engine.prefix_lm
    server = LiveServer(create_app(engine))
    yield load_checkpoint(ckpt), server
    server.close()


def test_greedy_completions_equal_bloomforge_generate(live):
    from bloomforge.model.generate import Sampling, generate_text

    loaded, server = live
    model, tok = loaded.model.eval(), loaded.tokenizer()
    expected = [generate_text(model, tok, [p], Sampling(max_new_tokens=10))[0] for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:  # together: they share the batch
        got = list(pool.map(lambda p: complete(server.url, prompt=p, max_tokens=10), PROMPTS))
    assert [g["choices"][0]["text"] for g in got] == expected


def test_echo_scores_equal_eval_with_the_context_as_prefix(live):
    from bloomforge.evaluation.scoring import Scorer

    loaded, server = live
    scorer = Scorer(loaded.model, loaded.tokenizer(), batch_size=1)
    ctx, cont = scorer.encode("Le chat est"), scorer.encode(" noir et blanc")
    [(ll, _)] = scorer.loglikelihood_tokens([(ctx, cont)])
    got = complete(
        server.url, prompt=ctx + cont, max_tokens=0, echo=True, logprobs=1, prefix_len=len(ctx)
    )
    lps = got["choices"][0]["logprobs"]["token_logprobs"]
    assert lps[: len(ctx)] == [None] * len(ctx)  # inside the prefix: seen, not predicted
    assert sum(lps[len(ctx) :]) == pytest.approx(ll, abs=1e-4)
    # the same weights read causally score otherwise: the prefix mask is in use
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ctx + cont]))[0].float().log_softmax(-1)
    causal = sum(logits[i - 1, t].item() for i, t in enumerate(ctx + cont) if i >= len(ctx))
    assert abs(causal - ll) > 1e-3


def test_generated_logprobs_equal_eval_with_the_prompt_as_prefix(live):
    from bloomforge.evaluation.scoring import Scorer

    loaded, server = live
    scorer = Scorer(loaded.model, loaded.tokenizer(), batch_size=1)
    for p in PROMPTS:
        body = dict(prompt=p, max_tokens=8, echo=True, logprobs=1)
        c = complete(server.url, return_tokens_as_token_ids=True, **body)["choices"][0]
        ids = [int(t.removeprefix("token_id:")) for t in c["logprobs"]["tokens"]]
        prompt = scorer.encode(p)
        assert ids[: len(prompt)] == prompt
        lps = c["logprobs"]["token_logprobs"]
        assert lps[: len(prompt)] == [None] * len(prompt)
        [(ll, _)] = scorer.loglikelihood_tokens([(prompt, ids[len(prompt) :])])
        assert sum(lps[len(prompt) :]) == pytest.approx(ll, abs=1e-3), p
