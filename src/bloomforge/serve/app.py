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
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
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

OPEN_PATHS = ("/", "/health", "/metrics")  # answered without the API key


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="bloomforge serve", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        t0 = time.perf_counter()
        path = request.url.path
        try:
            auth = request.headers.get("authorization", "")
            if api_key and path not in OPEN_PATHS and auth != f"Bearer {api_key}":
                raise APIError(401, "invalid or missing API key", None, "authentication_error")
            response = await call_next(request)
        except APIError as e:
            response = JSONResponse(e.body(), status_code=e.status)
        known = path in {r.path for r in app.routes}  # type: ignore[attr-defined]
        engine.metrics.observe(
            path if known else "other", response.status_code, time.perf_counter() - t0
        )
        return response

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
            return _stream(engine, work, req, prompts, rid, created)
        await _wait(engine, work, request)
        return _response(engine, work, req, prompts, rid, created)

    return app


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
    rows = [Row(p, req.max_tokens, stops) for p in prompts for _ in range(req.n)]
    return Work(rows, req.temperature, req.top_k, req.top_p, req.seed, req.logprobs)


def _submit(engine: Engine, work: Work) -> asyncio.Future:
    """Queue the work; a full queue is a 429 (back-pressure), as OpenAI's rate limit."""
    try:
        return engine.submit(work)
    except QueueFull as e:
        raise APIError(
            429, "server busy: the request queue is full, retry later", None, "rate_limit_error"
        ) from e


async def _wait(engine: Engine, work: Work, request: Request | None = None) -> None:
    future = _submit(engine, work)
    try:
        await asyncio.wait_for(asyncio.shield(future), engine.limits.timeout_s)
    except TimeoutError as e:
        for r in work.rows:
            r.cancelled = True
        raise APIError(408, f"request took over {engine.limits.timeout_s} s (timeout)", None) from e
    except asyncio.CancelledError:
        for r in work.rows:  # the client went away
            r.cancelled = True
        raise


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
    if row.logprobs is not None:
        lps = row.logprobs if req.echo else row.logprobs[len(prompt) :]
        ids = (prompt if req.echo else []) + row.new
        tokens = [engine.token_text(t) for t in ids]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": [lp for lp, _ in lps],
            "top_logprobs": [alts or None for _, alts in lps],
            "text_offset": offsets,
        }
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


def _stream(
    engine: Engine,
    work: Work,
    req: CompletionRequest,
    prompts: list[list[int]],
    rid: str,
    created: int,
) -> StreamingResponse:
    """Server-sent events: one chunk per piece of text that became final (an incomplete UTF-8
    character or a possible start of a stop string waits), then the finish reasons, [DONE]."""
    events: asyncio.Queue = asyncio.Queue()
    sent = [""] * len(work.rows)
    work.on_tokens = lambda j, ids: events.put_nowait((j, ids))
    future = _submit(engine, work)
    future.add_done_callback(lambda _: events.put_nowait(None))
    owners = [p for p in prompts for _ in range(req.n)]

    def chunk(i: int, text: str, finish: str | None, logprobs: Any = None) -> str:
        body = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": engine.name,
            "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}],
        }
        return f"data: {json.dumps(body)}\n\n"

    async def body() -> AsyncIterator[str]:
        deadline = time.monotonic() + engine.limits.timeout_s
        try:
            if req.echo:
                for i, p in enumerate(owners):
                    yield chunk(i, engine.decode(p), None)
            while True:
                left = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(events.get(), max(left, 0.001))
                except TimeoutError:
                    for r in work.rows:
                        r.cancelled = True
                    err = APIError(408, "request timed out", None)
                    yield f"data: {json.dumps(err.body())}\n\n"
                    return
                if event is None:
                    break
                j, ids = event
                row = work.rows[j]
                text = _final_part(engine.decode(ids), row.stops)
                if text.startswith(sent[j]) and len(text) > len(sent[j]):
                    yield chunk(j, text[len(sent[j]) :], None)
                    sent[j] = text
            if future.exception() is not None:
                err = APIError(500, f"generation failed: {future.exception()}", None)
                yield f"data: {json.dumps(err.body())}\n\n"
                return
            for j, (row, p) in enumerate(zip(work.rows, owners, strict=True)):
                full = _choice(engine, work, req, j, row, p)
                rest = engine.completion_text(row)
                yield chunk(
                    j,
                    rest[len(sent[j]) :] if rest.startswith(sent[j]) else "",
                    row.finish,
                    full["logprobs"],
                )
            yield "data: [DONE]\n\n"
        finally:
            for r in work.rows:  # closed early by the client: stop its rows
                if not future.done():
                    r.cancelled = True

    return StreamingResponse(body(), media_type="text/event-stream")


def _final_part(text: str, stops: list[str]) -> str:
    """The part of a row's text that will not change: up to a complete stop, without an
    incomplete UTF-8 character or a tail that may begin a stop string."""
    for s in stops:
        cut = text.find(s)
        if cut >= 0:
            return text[:cut]
    text = text.rstrip("\ufffd")
    hold = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - hold]
