"""A bounded load test of `bloomforge serve` (the command, in its own process on 127.0.0.1):
32 concurrent clients x 20 requests, mixed scoring (echo, max_tokens 0) and generation, on a
tiny model. Every request must succeed and every greedy answer under load must equal the same
request sent alone; p50/p99 latency and generated tokens/s are printed (speed is measured in
bench/serve.py, never asserted)."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from serve_process import serve_process
from test_serve_batching import checkpoint

CLIENTS, REQUESTS = 32, 20
PROMPTS = ["Le chat", "The history of", "En un lugar de la Mancha", "Der Hund", "日本語", "x"]


def request(client: int, i: int) -> dict:
    prompt = PROMPTS[(client + i) % len(PROMPTS)]
    if i % 2:  # scoring, as lm-eval's loglikelihood asks
        return {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1}
    if i % 4 == 0:
        return {"prompt": prompt, "max_tokens": 4, "temperature": 0}
    return {"prompt": prompt, "max_tokens": 3, "temperature": 0.8, "seed": client * 100 + i}


def test_32_clients_x_20_requests(tmp_path):
    ckpt = checkpoint(tmp_path / "ck", "n_layer=1")  # tiny: the server's own work shows
    with serve_process(ckpt, "--max-batch", "32", "--max-queue", "256") as url:
        with httpx.Client(base_url=url, timeout=60) as http:
            alone = {
                p: http.post("/v1/completions", json=request(0, 0) | {"prompt": p}).json()
                for p in PROMPTS
            }
        latencies: list[float] = []
        results: list[tuple[dict, httpx.Response]] = []

        async def client(http: httpx.AsyncClient, c: int) -> None:
            for i in range(REQUESTS):
                body = request(c, i)
                t0 = time.perf_counter()
                r = await http.post("/v1/completions", json=body)
                latencies.append(time.perf_counter() - t0)
                results.append((body, r))

        async def run() -> float:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
                t0 = time.perf_counter()
                await asyncio.gather(*(client(http, c) for c in range(CLIENTS)))
                return time.perf_counter() - t0

        wall = asyncio.run(run())
        metrics = httpx.get(f"{url}/metrics").text
    assert len(results) == CLIENTS * REQUESTS
    generated = 0
    for body, r in results:
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        if body["max_tokens"] == 0:
            lps = choice["logprobs"]["token_logprobs"]
            assert lps[0] is None and all(lp <= 0 for lp in lps[1:])
        else:
            n = r.json()["usage"]["completion_tokens"]
            assert n <= body["max_tokens"]
            generated += n
            if body.get("temperature") == 0:
                assert choice["text"] == alone[body["prompt"]]["choices"][0]["text"]
    assert 'status="200"' in metrics
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * len(ms)))]
    print(
        f"\nload: {CLIENTS} clients x {REQUESTS} requests in {wall:.1f} s: "
        f"p50 {statistics.median(ms):.0f} ms, p99 {p99:.0f} ms, "
        f"{generated / wall:.0f} generated tokens/s, {len(ms) / wall:.0f} requests/s"
    )
