"""`bloomforge serve`'s continuous batching, against references nobody here wrote or that run
alone: requests that join a running batch get the tokens they get alone (ALiBi and learned
positions, left padding of every width), transformers' `generate` on the exported model gives
the same greedy tokens, seeded sampling equals `bloomforge generate --seed`, a client that goes
away or a request past its timeout leaves the batch (metrics), and streamed chunks carry their
tokens' log-probs (the official `openai` client)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bloomforge.cli import main
from test_serve import LiveServer

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

PROMPTS = ["Le chat", "A", "Der Hund läuft schnell über die Wiese", "xyz", "Hola", "日本語"]


def checkpoint(folder: Path, *overrides: str) -> Path:
    # init_std 1: a random model whose greedy text varies (0.2 repeats one token)
    args = ["model", "init", "micro", str(folder), "vocab_size=260", "init_std=1.0", *overrides]
    assert main(args) == 0
    return folder


def serve(ckpt: Path, **limits) -> tuple[LiveServer, object]:
    from bloomforge.serve import load_engine
    from bloomforge.serve.app import create_app
    from bloomforge.serve.engine import Limits

    engine = load_engine(ckpt, limits=Limits(**{"max_batch": 8, "max_tokens": 64, **limits}))
    return LiveServer(create_app(engine)), engine


def slow_steps(engine, seconds: float) -> None:
    """Every decode step takes at least `seconds` (a bigger model's pace), so that a request
    is still running when the test acts on it."""
    step = engine.batch.step

    def slow():
        time.sleep(seconds)
        return step()

    engine.batch.step = slow


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture(scope="module", params=["alibi", "learned"])
def live(request, tmp_path_factory):
    ckpt = checkpoint(tmp_path_factory.mktemp(request.param) / "ck", f"position={request.param}")
    server, engine = serve(ckpt)
    yield ckpt, server, engine
    server.close()


def complete(url: str, **body) -> dict:
    r = httpx.post(f"{url}/v1/completions", json={"temperature": 0, **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_joining_a_running_batch_gives_the_tokens_of_alone(live):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.evaluation.scoring import Scorer

    ckpt, server, engine = live
    body = dict(max_tokens=24, logprobs=1, return_tokens_as_token_ids=True)
    alone = {p: complete(server.url, prompt=p, **body)["choices"][0] for p in PROMPTS}
    slow_steps(engine, 0.01)
    try:
        batches0 = metric(server.url, "bloomforge_batches_total")
        # staggered arrivals: each request joins a batch already decoding the earlier ones,
        # whose prompts are shorter or longer (left padding on either side of the join)
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            futures = []
            for p in PROMPTS:
                futures.append(pool.submit(complete, server.url, prompt=p, **body))
                time.sleep(0.03)
            together = {p: f.result()["choices"][0] for p, f in zip(PROMPTS, futures, strict=True)}
        forwards = metric(server.url, "bloomforge_batches_total") - batches0
    finally:
        engine.batch.step = type(engine.batch).step.__get__(engine.batch)
    assert {p: c["text"] for p, c in together.items()} == {p: c["text"] for p, c in alone.items()}
    # shared forward passes: alone, 6 requests x (1 prefill + 23 decode steps) = 144
    assert forwards < 0.75 * len(PROMPTS) * 24
    # each generated token's log-prob, decoded in the shared batch, equals one full forward
    # over prompt + completion (bloomforge eval's scorer: no cache, no padding)
    loaded = load_checkpoint(ckpt)
    scorer = Scorer(loaded.model, loaded.tokenizer(), batch_size=1)
    for p, c in together.items():
        new = [int(t.removeprefix("token_id:")) for t in c["logprobs"]["tokens"]]
        [(ll, _)] = scorer.loglikelihood_tokens([(scorer.encode(p), new)])
        assert sum(c["logprobs"]["token_logprobs"]) == pytest.approx(ll, abs=1e-3), p


def test_greedy_equals_generate_and_transformers(live, tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate_text

    ckpt, server, _ = live
    loaded = load_checkpoint(ckpt)
    tok = loaded.tokenizer()
    got = complete(server.url, prompt=PROMPTS, max_tokens=12)["choices"]
    texts = [c["text"] for c in sorted(got, key=lambda c: c["index"])]
    ours = [
        generate_text(loaded.model.eval(), tok, [p], Sampling(max_new_tokens=12))[0]
        for p in PROMPTS
    ]
    assert texts == ours
    if loaded.model.cfg.position != "alibi":
        return  # BloomForCausalLM is ALiBi-only: only ALiBi models export
    hf_dir = tmp_path / "hf"
    assert main(["export", str(ckpt), str(hf_dir)]) == 0
    hf = transformers.BloomForCausalLM.from_pretrained(hf_dir).eval()
    for p, text in zip(PROMPTS, texts, strict=True):
        ids = tok.encode(p, add_special_tokens=False).ids
        # never emit the embedding's padding rows (vocab 260 of 512 rows), as serve does
        pad_rows = list(range(tok.get_vocab_size(), loaded.model.cfg.padded_vocab_size))
        out = hf.generate(
            torch.tensor([ids]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=2,
            pad_token_id=3,
            suppress_tokens=pad_rows,
        )[0, len(ids) :].tolist()
        if 2 in out:
            out = out[: out.index(2)]
        assert tok.decode(out, skip_special_tokens=True) == text


def test_seeded_sampling_equals_bloomforge_generate_and_ignores_neighbours(live):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate_text

    ckpt, server, _ = live
    loaded = load_checkpoint(ckpt)
    s = Sampling(max_new_tokens=16, temperature=0.9, top_k=50, top_p=0.9, seed=11)
    [expected] = generate_text(loaded.model.eval(), loaded.tokenizer(), ["Le chat"], s)
    body = dict(prompt="Le chat", max_tokens=16, temperature=0.9, top_k=50, top_p=0.9, seed=11)

    def ask(i: int) -> str:
        b = body if i == 0 else dict(prompt=PROMPTS[i % 6], max_tokens=16, temperature=1.0)
        return complete(server.url, **b)["choices"][0]["text"]

    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(ask, range(6)))
    assert together[0] == expected


def test_disconnect_and_timeout_take_rows_out_of_the_batch(live):
    _, server, engine = live
    slow_steps(engine, 0.02)  # 60 tokens: over a second
    try:
        before = metric(server.url, 'bloomforge_cancelled_rows_total{reason="disconnect"}')
        generated0 = metric(server.url, "bloomforge_generated_tokens_total")
        body = {"prompt": "Le chat", "max_tokens": 60, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
            httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.3)
        with httpx.stream(  # a streaming request closed after its first chunk
            "POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=30
        ) as r:
            next(r.iter_lines())
        deadline = time.monotonic() + 10
        while (
            metric(server.url, 'bloomforge_cancelled_rows_total{reason="disconnect"}') < before + 2
        ):
            assert time.monotonic() < deadline, "the closed requests' rows were not cancelled"
            time.sleep(0.05)
        while metric(server.url, "bloomforge_running_rows") > 0:
            assert time.monotonic() < deadline, "cancelled rows stayed in the batch"
            time.sleep(0.05)
        assert metric(server.url, "bloomforge_generated_tokens_total") - generated0 < 2 * 60
        # a request past the server's timeout: 408, its rows leave the batch
        engine.limits.timeout_s = 0.3
        timeouts = metric(server.url, 'bloomforge_cancelled_rows_total{reason="timeout"}')
        r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 408 and "timeout" in r.json()["error"]["message"]
        while (
            metric(server.url, 'bloomforge_cancelled_rows_total{reason="timeout"}') < timeouts + 1
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        engine.limits.timeout_s = 120.0
        engine.batch.step = type(engine.batch).step.__get__(engine.batch)
    assert complete(server.url, prompt="Le chat", max_tokens=3)["choices"][0]["text"] is not None


def test_streamed_chunks_carry_their_tokens_logprobs(live):
    _, server, _ = live
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    whole = client.completions.create(
        model="ck", prompt="Le chat", max_tokens=16, temperature=0, logprobs=2
    ).choices[0]
    stream = client.completions.create(
        model="ck", prompt="Le chat", max_tokens=16, temperature=0, logprobs=2, stream=True
    )
    text, tokens, lps, offsets, chunks = "", [], [], [], 0
    for chunk in stream:
        c = chunk.choices[0]
        text += c.text
        if c.logprobs is not None and c.logprobs.tokens:
            chunks += 1
            assert len(c.logprobs.tokens) == len(c.logprobs.token_logprobs)
            assert all(2 <= len(top) <= 3 for top in c.logprobs.top_logprobs)
            tokens += c.logprobs.tokens
            lps += c.logprobs.token_logprobs
            offsets += c.logprobs.text_offset
    assert text == whole.text
    assert tokens == whole.logprobs.tokens and offsets == whole.logprobs.text_offset
    assert lps == pytest.approx(whole.logprobs.token_logprobs, abs=1e-5)
    assert chunks > 1  # token by token, not all in the last chunk
