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
