"""Server-sent events for `stream: true`, as OpenAI's legacy completions stream, and the
`logprobs` object both the streamed and the whole answers carry.

In: a submitted `Work` whose engine steps report (`Work.on_step`). Out: SSE chunks per row: the
echoed prompt, whole tokens as they become final text (with their log-probs when asked), the
finish reason, then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from bloomforge.serve.engine import Engine, StepEvent, TokenLogprob, Work
from bloomforge.serve.protocol import APIError, CompletionRequest


def logprob_block(
    engine: Engine, req: CompletionRequest, ids: list[int], lps: list[TokenLogprob], offset: int
) -> tuple[dict[str, Any], int]:
    """OpenAI's `logprobs` object for tokens `ids` whose text starts at `offset`; the offset
    after them. Offsets count the tokens' texts (as `tokens` names them)."""

    def name(t: int) -> str:
        return f"token_id:{t}" if req.return_tokens_as_token_ids else engine.token_text(t)

    offsets = []
    for t in ids:
        offsets.append(offset)
        offset += len(engine.token_text(t))
    tops: list[dict[str, float] | None] = []
    for _, alts in lps:
        named: dict[str, float] = {}
        for t, v in alts.items():  # two ids may decode alike: keep the likelier
            named[name(t)] = max(named.get(name(t), float("-inf")), v)
        tops.append(named or None)
    block = {
        "tokens": [name(t) for t in ids],
        "token_logprobs": [lp for lp, _ in lps],
        "top_logprobs": tops,
        "text_offset": offsets,
    }
    return block, offset


def stream_response(
    engine: Engine,
    work: Work,
    req: CompletionRequest,
    prompts: list[list[int]],
    rid: str,
    created: int,
    future: asyncio.Future,
) -> StreamingResponse:
    """Server-sent events, as OpenAI's legacy completions stream: per row, the echoed prompt,
    then a chunk each time whole tokens became final text (a token that ends inside a UTF-8
    character or may begin a stop string waits), each with those tokens' log-probs when asked,
    then the row's last piece with its finish reason; at the end `[DONE]`."""
    events: asyncio.Queue[StepEvent | None] = asyncio.Queue()
    n = len(work.rows)
    sent, sent_tokens, offset = [""] * n, [0] * n, [0] * n
    started, closed = [False] * n, [False] * n
    work.on_step = events.put_nowait  # set before the engine's first step (the next loop turn)
    future.add_done_callback(lambda _: events.put_nowait(None))
    owners = [p for p in prompts for _ in range(req.n)]
    want = req.logprobs is not None

    def chunk(i: int, text: str, finish: str | None, logprobs: Any = None) -> str:
        body = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": engine.name,
            "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": logprobs}],
        }
        return f"data: {json.dumps(body)}\n\n"

    def pieces(event: StepEvent) -> list[str]:
        j, new, lps, done = event
        row, out = work.rows[j], []
        if closed[j]:
            return out
        if not started[j]:
            started[j] = True
            if req.echo:
                p = owners[j]
                block = None
                if want:
                    block, offset[j] = logprob_block(engine, req, p, row.prompt_logprobs or [], 0)
                out.append(chunk(j, engine.decode(p), None, block))
        k0 = sent_tokens[j]
        if done:
            k, text = len(new), engine.completion_text(row, new)
            text = text[len(sent[j]) :] if text.startswith(sent[j]) else ""
        else:
            final = final_part(engine.decode(new), row.stops)
            k = next(
                (
                    k
                    for k in range(len(new), k0, -1)
                    if final.startswith(t := engine.decode(new[:k])) and t.startswith(sent[j])
                ),
                k0,
            )
            if k == k0:
                return out
            whole = engine.decode(new[:k])
            text, sent[j] = whole[len(sent[j]) :], whole
        block = None
        if want:
            block, offset[j] = logprob_block(engine, req, new[k0:k], lps[k0:k], offset[j])
        sent_tokens[j] = k
        if done or text or want:
            out.append(chunk(j, text, row.finish if done else None, block))
        closed[j] = done
        return out

    async def body() -> AsyncIterator[str]:
        deadline = time.monotonic() + engine.limits.timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(events.get(), max(left, 0.001))
                except TimeoutError:
                    work.cancel("timeout")
                    err = APIError(408, "request timed out", None)
                    yield f"data: {json.dumps(err.body())}\n\n"
                    return
                if event is None:
                    break
                for piece in pieces(event):
                    yield piece
            if future.exception() is not None:
                err = APIError(500, f"generation failed: {future.exception()}", None)
                yield f"data: {json.dumps(err.body())}\n\n"
                return
            yield "data: [DONE]\n\n"
        finally:
            if not future.done():  # closed early by the client: stop its rows
                work.cancel("disconnect")

    return StreamingResponse(body(), media_type="text/event-stream")


def final_part(text: str, stops: list[str]) -> str:
    """The part of a row's text that will not change: up to a complete stop, without an
    incomplete UTF-8 character or a tail that may begin a stop string."""
    for s in stops:
        cut = text.find(s)
        if cut >= 0:
            return text[:cut]
    text = text.rstrip("\ufffd")
    hold = max((n for s in stops for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
    return text[: len(text) - hold]
