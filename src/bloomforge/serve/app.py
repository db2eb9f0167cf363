"""The HTTP side of `bloomforge serve`: FastAPI routes speaking OpenAI's completions protocol.

In: HTTP requests. Out: OpenAI-shaped JSON (or server-sent events with `stream`), and for any
request the server refuses a 4xx with OpenAI's error body naming the field; nothing a client
sends takes the server down. Routes: POST /v1/completions, GET /v1/models, POST /tokenize,
POST /detokenize, GET /tokenizer_info, GET /health, GET /metrics (Prometheus text), GET / (the
playground page).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError

from bloomforge.serve.engine import Engine, QueueFull, Row, Work
from bloomforge.serve.playground import PAGE
from bloomforge.serve.protocol import (
    APIError,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
    validation_error,
)
from bloomforge.serve.stream import logprob_block, stream_response

OPEN_PATHS = ("/", "/health", "/metrics")  # answered without the API key


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="bloomforge serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    app.add_middleware(Guard, engine=engine, api_key=api_key, paths=lambda: app.routes)

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> JSONResponse:
        e = APIError(404, f"{request.url.path}: no such route", None)
        return JSONResponse(e.body(), status_code=404)

    @app.exception_handler(405)
    async def bad_method(request: Request, _: Exception) -> JSONResponse:
        e = APIError(405, f"{request.method} {request.url.path}: method not allowed", None)
        return JSONResponse(e.body(), status_code=405)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(engine.metrics.text(engine.queue_depth()))

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": engine.name,
            "object": "model",
            "created": 0,
            "owned_by": "bloomforge",
            "max_model_len": engine.context,
        }
        return {"object": "list", "data": [card]}

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> dict[str, Any]:
        tok = engine.tokenizer
        special = {
            "bos_token": "<s>" if engine.bos_id is not None else None,
            "eos_token": "</s>" if engine.eos_id is not None else None,
            "pad_token": tok.id_to_token(engine.pad_id),
        }
        return {
            **special,
            "eos_token_id": engine.eos_id,
            "bos_token_id": engine.bos_id,
            "pad_token_id": engine.pad_id,
            "model_max_length": engine.context,
            "vocab_size": engine.vocab,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        req = await _parse(request, TokenizeRequest)
        ids = engine.tokenizer.encode(req.prompt, add_special_tokens=req.add_special_tokens).ids
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.context}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        req = await _parse(request, DetokenizeRequest)
        _check_ids(engine, req.tokens, "tokens")
        return {"prompt": engine.decode(req.tokens, skip_special=False)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = await _parse(request, CompletionRequest)
        _check_limits(engine, req)
        prompts = _prompts(engine, req)
        work = _work(engine, req, prompts)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            future = _submit(engine, work)  # refused (429) before the stream starts
            return stream_response(engine, work, req, prompts, rid, created, future)
        await _wait(engine, work, request)
        return _response(engine, work, req, prompts, rid, created)

    return app


class Guard:
    """ASGI middleware: the API key, then the request's route, status and seconds into the
    metrics. Plain ASGI (not Starlette's BaseHTTPMiddleware) so that a route still sees its
    client disconnect (`http.disconnect`)."""

    def __init__(self, app: Any, engine: Engine, api_key: str | None, paths: Any) -> None:
        self.app, self.engine, self.api_key, self.paths = app, engine, api_key, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, path, status = time.perf_counter(), scope["path"], [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if self.api_key and path not in OPEN_PATHS and auth != f"Bearer {self.api_key}":
                e = APIError(401, "invalid or missing API key", None, "authentication_error")
                await JSONResponse(e.body(), status_code=401)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            known = path in {r.path for r in self.paths()}
            self.engine.metrics.observe(
                path if known else "other", status[0], time.perf_counter() - t0
            )


async def _parse(request: Request, model: type[BaseModel]) -> Any:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"body: not valid JSON ({e})", "body") from e
    if not isinstance(data, dict):
        raise APIError(400, "body: expected a JSON object", "body")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from e


def _check_ids(engine: Engine, ids: list[int], field: str) -> None:
    bad = next((t for t in ids if not 0 <= t < engine.vocab), None)
    if bad is not None:
        raise APIError(
            400, f"{field}: token id {bad} is outside the vocabulary [0, {engine.vocab})", field
        )


def _prompts(engine: Engine, req: CompletionRequest) -> list[list[int]]:
    """The request's prompts as token ids, each checked against the vocabulary and context."""
    p = req.prompt
    if isinstance(p, str):
        texts: list[Any] = [p]
    elif p and all(isinstance(x, int) for x in p):
        texts = [p]
    else:
        texts = list(p)
    if not texts:
        raise APIError(400, "prompt: empty list", "prompt")
    prompts = []
    for i, t in enumerate(texts):
        where = "prompt" if len(texts) == 1 else f"prompt.{i}"
        ids = engine.encode(t) if isinstance(t, str) else list(t)
        if not ids:
            raise APIError(400, f"{where}: empty prompt (no tokens)", where)
        _check_ids(engine, ids, where)
        if len(ids) + req.max_tokens > engine.context or len(ids) > engine.context:
            raise APIError(
                400,
                f"{where}: {len(ids)} prompt tokens + max_tokens="
                f"{req.max_tokens} exceed the model's context of {engine.context} "
                "tokens",
                where,
            )
        if req.prefix_len is not None and req.prefix_len > len(ids):
            raise APIError(
                400,
                f"prefix_len: {req.prefix_len} is longer than {where} ({len(ids)} tokens)",
                "prefix_len",
            )
        prompts.append(ids)
    return prompts


def _check_limits(engine: Engine, req: CompletionRequest) -> None:
    lim = engine.limits
    if req.max_tokens > lim.max_tokens:
        raise APIError(
            400,
            f"max_tokens: {req.max_tokens} is over this server's limit of {lim.max_tokens}",
            "max_tokens",
        )
    if req.n > lim.max_n:
        raise APIError(400, f"n: {req.n} is over this server's limit of {lim.max_n}", "n")
    if req.logprobs is not None and req.logprobs > lim.max_logprobs:
        raise APIError(400, f"logprobs: at most {lim.max_logprobs}", "logprobs")
    if req.prefix_len is not None and not engine.prefix_lm:
        raise APIError(400, "prefix_len: the model is not a prefix-LM (causal)", "prefix_len")
    if req.max_tokens == 0 and not req.echo:
        raise APIError(400, "max_tokens: 0 needs echo (scoring the prompt)", "max_tokens")


def _work(engine: Engine, req: CompletionRequest, prompts: list[list[int]]) -> Work:
    lim = engine.limits
    if len(prompts) * req.n > lim.max_rows:
        raise APIError(
            400,
            f"n: {len(prompts)} prompts x n={req.n} is over this server's "
            f"limit of {lim.max_rows} completions per request",
            "n",
        )
    stops = req.stops()
    if any(s == "" for s in stops):
        raise APIError(400, "stop: empty stop string", "stop")
    rows = [Row(p, req.max_tokens, stops, req.prefix_len) for p in prompts for _ in range(req.n)]
    return Work(rows, req.temperature, req.top_k, req.top_p, req.seed, req.logprobs, req.echo)


def _submit(engine: Engine, work: Work) -> asyncio.Future:
    """Queue the work; a full queue is a 429 (back-pressure), as OpenAI's rate limit."""
    try:
        return engine.submit(work)
    except QueueFull as e:
        raise APIError(
            429, "server busy: the request queue is full, retry later", None, "rate_limit_error"
        ) from e


async def _wait(engine: Engine, work: Work, request: Request | None = None) -> None:
    """Wait for the work; a client that went away or a request past the timeout stops its rows
    (they leave the running batch at the next step)."""
    future = _submit(engine, work)
    gone = asyncio.ensure_future(_disconnect(request)) if request is not None else None
    try:
        waits = {future} if gone is None else {future, gone}
        await asyncio.wait(waits, timeout=engine.limits.timeout_s, return_when="FIRST_COMPLETED")
        if gone is not None and gone.done() and not future.done():
            work.cancel("disconnect")
            raise APIError(499, "client closed the request", None)
        if not future.done():
            work.cancel("timeout")
            raise APIError(408, f"request took over {engine.limits.timeout_s} s (timeout)", None)
    except asyncio.CancelledError:
        work.cancel("disconnect")
        raise
    finally:
        if gone is not None:
            gone.cancel()
    if future.exception() is not None:
        raise APIError(500, f"generation failed: {future.exception()}", None)


async def _disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the ASGI server's `http.disconnect`;
    the request body has been read, so nothing else arrives)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _choice(
    engine: Engine, work: Work, req: CompletionRequest, i: int, row: Row, prompt: list[int]
) -> dict[str, Any]:
    text = engine.completion_text(row)
    prefix = engine.decode(prompt) if req.echo else ""
    choice: dict[str, Any] = {
        "index": i,
        "text": prefix + text,
        "finish_reason": row.finish,
        "logprobs": None,
    }
    if work.logprobs is not None:
        lps = (row.prompt_logprobs or [] if req.echo else []) + row.new_logprobs
        ids = (prompt if req.echo else []) + row.new
        choice["logprobs"], _ = logprob_block(engine, req, ids, lps, 0)
    return choice


def _response(
    engine: Engine,
    work: Work,
    req: CompletionRequest,
    prompts: list[list[int]],
    rid: str,
    created: int,
) -> dict[str, Any]:
    owners = [p for p in prompts for _ in range(req.n)]
    choices = [
        _choice(engine, work, req, i, r, p)
        for i, (r, p) in enumerate(zip(work.rows, owners, strict=True))
    ]
    generated = sum(len(r.new) for r in work.rows)
    prompt_tokens = sum(len(p) for p in prompts)
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": engine.name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": prompt_tokens + generated,
        },
    }
