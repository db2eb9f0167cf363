"""`bloomforge serve` (issue 18) against clients nobody here wrote: the official `openai` client
and lm-eval's `local-completions`, on a live uvicorn server in a thread. References: the library
`generate_text` (what `bloomforge generate` prints) and `bloomforge eval`'s scores."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bloomforge.cli import main

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def make_checkpoint(folder: Path) -> Path:
    assert main(["model", "init", "micro", str(folder), "vocab_size=260", "init_std=0.2"]) == 0
    return folder


class LiveServer:
    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve") / "ck")


@pytest.fixture(scope="module")
def server(ckpt):
    from bloomforge.serve import load_engine
    from bloomforge.serve.app import create_app
    from bloomforge.serve.engine import Limits

    engine = load_engine(ckpt, limits=Limits(max_batch=8, max_tokens=64))
    live = LiveServer(create_app(engine))
    yield live
    live.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def reference_greedy(ckpt: Path, prompts: list[str], n: int) -> list[str]:
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.model.generate import Sampling, generate_text

    loaded = load_checkpoint(ckpt)
    return [
        generate_text(loaded.model.eval(), loaded.tokenizer(), [p], Sampling(max_new_tokens=n))[0]
        for p in prompts
    ]


PROMPTS = ["Le chat", "The quick brown fox jumps", "日本"]


def test_openai_client_greedy_equals_generate(ckpt, client):
    expected = reference_greedy(ckpt, PROMPTS, 12)
    got = client.completions.create(model="ck", prompt=PROMPTS, max_tokens=12, temperature=0)
    assert [c.text for c in sorted(got.choices, key=lambda c: c.index)] == expected
    assert got.usage.completion_tokens > 0


def test_openai_client_streaming_adds_up_to_the_whole(ckpt, client):
    [expected] = reference_greedy(ckpt, ["Le chat"], 16)
    stream = client.completions.create(
        model="ck", prompt="Le chat", max_tokens=16, temperature=0, stream=True
    )
    pieces, finish = [], None
    for chunk in stream:
        pieces.append(chunk.choices[0].text)
        finish = chunk.choices[0].finish_reason or finish
    # a random model's bytes rarely form UTF-8: incomplete characters wait, so pieces may be few
    assert "".join(pieces) == expected and pieces
    assert finish in ("length", "stop")


def test_openai_client_logprobs_echo_equal_eval_scores(ckpt, client):
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.evaluation.scoring import Scorer

    loaded = load_checkpoint(ckpt)
    scorer = Scorer(loaded.model, loaded.tokenizer(), batch_size=1)
    ctx, cont = scorer.encode("Le chat est"), scorer.encode(" noir")
    [(ll, _)] = scorer.loglikelihood_tokens([(ctx, cont)])
    got = client.completions.create(
        model="ck", prompt=ctx + cont, max_tokens=0, echo=True, logprobs=3, temperature=0
    )
    lp = got.choices[0].logprobs
    assert lp.token_logprobs[0] is None and len(lp.tokens) == len(ctx + cont)
    assert sum(lp.token_logprobs[len(ctx) :]) == pytest.approx(ll, abs=1e-4)
    assert all(3 <= len(top) <= 4 for top in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert got.choices[0].text == "Le chat est noir"


def test_generated_logprobs_are_the_greedy_maxima(client):
    got = client.completions.create(
        model="ck", prompt="Le chat", max_tokens=6, temperature=0, logprobs=2
    )
    lp = got.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) <= 6
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert chosen == pytest.approx(max(top.values()), abs=1e-6)


def test_concurrent_requests_give_the_same_tokens_as_alone(client):
    prompts = ["Le chat", "A", "Der Hund läuft schnell", "xyz", "Hola", "The quick brown fox"]
    alone = [
        client.completions.create(model="ck", prompt=p, max_tokens=10, temperature=0)
        .choices[0]
        .text
        for p in prompts
    ]
    seeded = dict(model="ck", prompt="Le chat", max_tokens=10, temperature=1.0, seed=7, n=2)
    sample_alone = [c.text for c in client.completions.create(**seeded).choices]

    def ask(i: int) -> str | list[str]:
        if i == len(prompts):
            return [c.text for c in client.completions.create(**seeded).choices]
        r = client.completions.create(model="ck", prompt=prompts[i], max_tokens=10, temperature=0)
        return r.choices[0].text

    for _ in range(2):
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(ask, range(len(prompts) + 1)))
        assert together[:-1] == alone
        assert together[-1] == sample_alone  # seeded sampling: reproducible per request
    other = client.completions.create(**{**seeded, "seed": 8})
    assert [c.text for c in other.choices] != sample_alone


def test_stop_strings_cut_the_text(client):
    full = client.completions.create(model="ck", prompt="Le chat", max_tokens=20, temperature=0)
    text = full.choices[0].text
    # the first character that did not appear before (a random model's text is odd)
    at = next((i for i in range(1, len(text)) if text[i] not in text[:i]), 0)
    stop = text[at]
    cut = client.completions.create(
        model="ck", prompt="Le chat", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_tokenize_detokenize_models_health_metrics(server):
    with httpx.Client(base_url=server.url) as http:
        ids = http.post("/tokenize", json={"prompt": "Le chat"}).json()["tokens"]
        assert http.post("/detokenize", json={"tokens": ids}).json()["prompt"] == "Le chat"
        assert http.get("/v1/models").json()["data"][0]["id"] == "ck"
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/tokenizer_info").json()["eos_token"] == "</s>"
        metrics = http.get("/metrics").text
        assert "bloomforge_generated_tokens_total" in metrics
        assert "bloomforge_request_seconds_bucket" in metrics
        assert "<textarea" in http.get("/").text


def test_lm_eval_local_completions_equals_bloomforge_eval(ckpt, server, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate

    from test_eval_tasks import mini_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hf_dir = tmp_path / "hf"
    assert main(["export", str(ckpt), str(hf_dir)]) == 0
    mini = mini_tasks(tmp_path)
    out = tmp_path / "res.json"
    assert main(["eval", str(ckpt), *mini.eval_args, "--out", str(out)]) == 0
    ours = json.loads(out.read_text())["tasks"]
    args = (
        f"base_url={server.url}/v1/completions,model=ck,tokenizer_backend=huggingface,"
        f"tokenizer={hf_dir},batch_size=4,max_length=256"
    )
    ref = simple_evaluate(
        model="local-completions",
        model_args=args,
        tasks=["bf_mini_mc", "bf_mini_ll"],
        task_manager=mini.task_manager(),
        bootstrap_iters=10,
    )["results"]
    mc, ll = ours["bf_mini_mc"]["all"], ours["bf_mini_ll"]["all"]
    assert mc["acc"] == ref["bf_mini_mc"]["acc,none"]
    assert mc["acc_norm"] == ref["bf_mini_mc"]["acc_norm,none"]
    assert ll["acc"] == ref["bf_mini_ll"]["acc,none"]
    assert ll["perplexity"] == pytest.approx(ref["bf_mini_ll"]["perplexity,none"], rel=1e-4)
