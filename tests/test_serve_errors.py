"""Bad input never takes `bloomforge serve` down: each malformed request gets a 4xx with OpenAI's
error body naming the field, and the next request is served."""

from __future__ import annotations

import asyncio

import pytest

from test_serve import make_checkpoint

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

GOOD = {"prompt": "Le chat", "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from bloomforge.serve import load_engine
    from bloomforge.serve.engine import Limits

    ck = make_checkpoint(tmp_path_factory.mktemp("serve_err") / "ck")
    return load_engine(ck, limits=Limits(max_tokens=32, max_n=4, max_rows=8))


@pytest.fixture(scope="module")
def http(engine):
    from bloomforge.serve.app import create_app

    with TestClient(create_app(engine)) as c:
        yield c


BAD = [
    ("not json", None, 400, "body"),
    ('["a list"]', None, 400, "body"),
    (None, {"max_tokens": 2}, 400, "prompt"),
    (None, {**GOOD, "temprature": 0.5}, 400, "temprature"),
    (None, {**GOOD, "max_tokens": "5"}, 400, "max_tokens"),
    (None, {**GOOD, "max_tokens": -1}, 400, "max_tokens"),
    (None, {**GOOD, "max_tokens": 10_000}, 400, "max_tokens"),
    (None, {**GOOD, "temperature": "hot"}, 400, "temperature"),
    (None, {**GOOD, "top_p": 0}, 400, "top_p"),
    (None, {**GOOD, "stop": 5}, 400, "stop"),
    (None, {**GOOD, "stream": "yes"}, 400, "stream"),
    (None, {**GOOD, "prompt": ""}, 400, "prompt"),
    (None, {**GOOD, "prompt": []}, 400, "prompt"),
    (None, {**GOOD, "prompt": ["ok", ""]}, 400, "prompt.1"),
    (None, {**GOOD, "prompt": [1, 2, 99999]}, 400, "prompt"),
    (None, {**GOOD, "prompt": [1, -3]}, 400, "prompt"),
    (None, {**GOOD, "prompt": [[5, 6], [7, 1000]]}, 400, "prompt.1"),
    (None, {**GOOD, "prompt": [1.5, 2]}, 400, "prompt"),
    (None, {**GOOD, "prompt": "x" * 300}, 400, "prompt"),
    (None, {**GOOD, "prompt": "x" * 250, "max_tokens": 30}, 400, "prompt"),
    (None, {**GOOD, "n": 1_000_000}, 400, "n"),
    (None, {**GOOD, "n": 0}, 400, "n"),
    (None, {**GOOD, "prompt": ["a"] * 5, "n": 2}, 400, "n"),
    (None, {**GOOD, "logprobs": 10_000}, 400, "logprobs"),
    (None, {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
]


@pytest.mark.parametrize(("raw", "body", "status", "param"), BAD)
def test_bad_request_names_the_field_and_the_server_goes_on(http, raw, body, status, param):
    if raw is not None:
        r = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    else:
        r = http.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"]
    assert err["type"] == "invalid_request_error"
    ok = http.post("/v1/completions", json=GOOD)
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 1


MORE_BAD = [
    ({**GOOD, "prefix_len": 2}, "prefix_len"),  # a causal model has no prefix
    ({**GOOD, "top_k": -2}, "top_k"),
    ({**GOOD, "seed": "7"}, "seed"),
    ({**GOOD, "logprobs": -1}, "logprobs"),
    ({**GOOD, "stop": ["ok", ""]}, "stop"),
    ({**GOOD, "echo": "true"}, "echo"),
    ({**GOOD, "return_tokens_as_token_ids": 1}, "return_tokens_as_token_ids"),
    ({**GOOD, "prompt": list(range(70, 330))}, "prompt"),  # 260 ids: over the 256 context
    ({**GOOD, "prompt": [[5, 6], []]}, "prompt.1"),
    ({**GOOD, "prompt": {"text": "x"}}, "prompt"),
    ({**GOOD, "n": 10**30}, "n"),
    ({**GOOD, "stream": True, "max_tokens": 10_000}, "max_tokens"),  # refused before streaming
]


@pytest.mark.parametrize(("body", "param"), MORE_BAD)
def test_more_bad_requests(http, body, param):
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["param"] == param
    assert http.post("/v1/completions", json=GOOD).status_code == 200


def test_other_endpoints_refuse_bad_input(http):
    r = http.post("/tokenize", json={"text": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = http.post("/detokenize", json={"tokens": [1, 1_000_000]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tokens"
    assert http.get("/nowhere").status_code == 404
    assert http.get("/v1/completions").status_code == 405
    assert http.get("/health").json() == {"status": "ok"}


def test_full_queue_is_429(engine):
    from bloomforge.serve.app import _work
    from bloomforge.serve.engine import QueueFull
    from bloomforge.serve.protocol import CompletionRequest

    async def fill() -> None:
        await engine.start()
        try:
            req = CompletionRequest(prompt="a", max_tokens=1, temperature=0)
            engine.submit(_work(engine, req, [[70]]))
            with pytest.raises(QueueFull):
                for _ in range(engine.limits.max_queue + 1):
                    engine.submit(_work(engine, req, [[70]]))
        finally:
            engine.waiting.clear()
            await engine.stop()

    asyncio.run(fill())


def test_api_key(engine):
    from bloomforge.serve.app import create_app

    with TestClient(create_app(engine, api_key="s3cret")) as c:
        r = c.post("/v1/completions", json=GOOD)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        auth = {"Authorization": "Bearer s3cret"}
        assert c.post("/v1/completions", json=GOOD, headers=auth).status_code == 200
        assert c.get("/health").status_code == 200


def test_api_key_guards_every_route_but_health_metrics_and_page(engine):
    from bloomforge.serve.app import create_app

    with TestClient(create_app(engine, api_key="s3cret")) as c:
        for method, path, body in [
            ("post", "/v1/completions", {**GOOD, "stream": True}),
            ("post", "/tokenize", {"prompt": "x"}),
            ("post", "/detokenize", {"tokens": [70]}),
            ("get", "/v1/models", None),
            ("get", "/tokenizer_info", None),
        ]:
            r = getattr(c, method)(path, **({"json": body} if body else {}))
            assert r.status_code == 401, path
            wrong = {"Authorization": "Bearer nope"}
            assert (
                getattr(c, method)(
                    path, headers=wrong, **({"json": body} if body else {})
                ).status_code
                == 401
            )
        for path in ("/", "/health", "/metrics"):
            assert c.get(path).status_code == 200
        assert 'path="/v1/models",status="401"' in c.get("/metrics").text


def test_cli_binds_localhost_by_default_and_refuses_bad_flags(tmp_path, monkeypatch, capsys):
    import uvicorn

    from bloomforge.cli import main

    ck = make_checkpoint(tmp_path / "ck")
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    assert main(["serve", str(ck), "--port", "8123", "--api-key", "k"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    with TestClient(seen["app"]) as c:  # the app the command built: the key is required
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
    capsys.readouterr()
    assert main(["serve", str(ck), "--max-batch", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-batch" in err and len(err.splitlines()) == 1
