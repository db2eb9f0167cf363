"""Serving throughput and latency: `bloomforge serve` vs `transformers serve` on one exported model.

Generated tokens/s and p50/p99 request latency at 1, 8 and 32 concurrent clients, the same
greedy `/v1/completions` requests (same prompts, same max_tokens) for every server. All servers
run at once, idle but one: each round measures every server at a level in turn (the order
alternates between rounds), and the table gives per level the median over rounds, and the ratio
bloomforge / transformers (tokens/s: higher is better; p99: lower is better). A server that
fails its warm-up request is reported with the reason and left out. The table is printed last.

    bloomforge model init tiny /tmp/b/ck vocab_size=260 init_std=1.0
    bloomforge export /tmp/b/ck /tmp/b/hf
    python bench/serve.py /tmp/b/hf [--rounds 3] [--requests 4] [--max-tokens 32] [--clients 1,8,32]
        [--threads 1]

transformers serve takes the model folder as its model id (its `FORCE_MODEL`) and answers
`/v1/completions` (transformers >= 5: its legacy-completions handler) without a chat template.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

PROMPTS = ["Le chat", "The history of", "En un lugar de la Mancha", "Der Hund", "Once upon a time"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    cmd: list[str], url: str, log, threads: int | None, timeout: float = 300
) -> subprocess.Popen | None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if threads:  # torch's intra-op threads: on a busy machine, more threads than free cores spin
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            print(f"{' '.join(cmd[:2])} exited: {log.read().decode()[-400:]}")
            return None
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    print(f"{' '.join(cmd[:2])}: not answering after {timeout} s")
    return None


async def one(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> tuple:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    t0 = time.perf_counter()
    r = await http.post("/v1/completions", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    return time.perf_counter() - t0, int(r.json()["usage"]["completion_tokens"])


async def load(base: str, model: str, clients: int, total: int, max_tokens: int) -> dict:
    """`clients` concurrent clients, each sending its share of `total` requests in turn."""
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(total)]
    done: list[tuple[float, int]] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:

        async def client(c: int) -> None:
            for prompt in jobs[c::clients]:
                done.append(await one(http, model, prompt, max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    lat = sorted(d for d, _ in done)
    return {
        "tok/s": sum(n for _, n in done) / wall,
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="exported HF folder (served by both)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per server and level")
    ap.add_argument("--requests", type=int, default=4, help="requests per client (>= 16 total)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-batch", type=int, default=32, help="bloomforge serve --max-batch")
    ap.add_argument("--no-transformers", action="store_true", help="bloomforge serve alone")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of every server")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    model = os.path.abspath(args.model)

    servers: dict[str, str] = {}  # name -> base URL
    procs = []
    logs = contextlib.ExitStack()
    port = free_port()
    log = logs.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (ExitStack closes)
    bf = start([sys.executable, "-m", "bloomforge", "serve", model, "--port", str(port),
                "--max-batch", str(args.max_batch), "--max-queue", "4096"],
               f"http://127.0.0.1:{port}/health", log, args.threads)  # fmt: skip
    if bf is not None:
        procs.append(bf)
        servers["bloomforge serve"] = f"http://127.0.0.1:{port}"
    exe = shutil.which("transformers")
    notes = []
    if args.no_transformers:
        pass
    elif exe is None:
        notes.append("transformers serve: the `transformers` command is not installed; skipped")
    else:
        for cb in (False, True):
            port = free_port()
            log = logs.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (ExitStack closes)
            cmd = [exe, "serve", model, "--host", "127.0.0.1", "--port", str(port),
                   "--device", "cpu", "--dtype", "float32"]  # fmt: skip
            cmd += ["--continuous-batching"] * cb
            name = "transformers serve" + (" --continuous-batching" * cb)
            proc = start(cmd, f"http://127.0.0.1:{port}/health", log, args.threads)
            if proc is None:
                notes.append(f"{name}: did not start offline here; skipped")
                continue
            procs.append(proc)
            servers[name] = f"http://127.0.0.1:{port}"
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for name, base in list(servers.items()):  # warm-up: one request each
            try:
                asyncio.run(load(base, model, 1, 1, 2))
            except (RuntimeError, httpx.HTTPError) as e:
                notes.append(f"{name}: warm-up request failed ({e}); left out")
                del servers[name]
        for r in range(args.rounds):
            for clients in levels:
                order = list(servers.items())
                for name, base in order if r % 2 == 0 else order[::-1]:
                    total = max(16, clients * args.requests)
                    m = asyncio.run(load(base, model, clients, total, args.max_tokens))
                    results.setdefault((name, clients), []).append(m)
                    print(f"round {r + 1} {name:<38} {clients:>3} clients: {m['tok/s']:.1f} tok/s")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        logs.close()
    for note in notes:
        print(note)
    print(
        f"\nmedians of {args.rounds} rounds, max_tokens {args.max_tokens}, greedy, "
        f"{os.cpu_count()} CPUs (shared machine: noisy), {args.threads or 'default'} torch "
        "threads per server"
    )
    print(
        f"{'server':<38} {'clients':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} "
        f"{'x tok/s':>8} {'x p99':>6}"
    )
    for clients in levels:
        ref = {}
        for name in servers:
            ms = results.get((name, clients), [])
            if not ms:
                continue
            med = {k: statistics.median(m[k] for m in ms) for k in ("tok/s", "p50", "p99")}
            if name == "bloomforge serve":
                ref = med
            ratio = ""
            if ref and name != "bloomforge serve":  # bloomforge / this server
                ratio = f"{ref['tok/s'] / med['tok/s']:>8.2f} {ref['p99'] / med['p99']:>6.2f}"
            print(
                f"{name:<38} {clients:>7} {med['tok/s']:>8.1f} {med['p50']:>7.3f} "
                f"{med['p99']:>7.3f} {ratio}"
            )
    print("x tok/s: bloomforge's tokens/s over this server's (>1: bloomforge faster); "
          "x p99: bloomforge's p99 over this server's (<1: bloomforge's is lower)")  # fmt: skip


if __name__ == "__main__":
    main()
