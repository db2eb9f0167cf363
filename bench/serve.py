"""Serving throughput and latency: `bloomforge serve` vs `transformers serve` on one exported model.

Generated tokens/s and p50/p99 request latency at 1, 8 and 32 concurrent clients, the same
greedy requests for both servers, servers alternated per concurrency level. `transformers serve`
(transformers' OpenAI-compatible server) is measured when its command starts offline here;
otherwise the output says so. The table is printed last.

    python bench/serve.py HF_OR_CKPT [--requests 20] [--max-tokens 32] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

PROMPTS = ["Le chat", "The history of", "En un lugar de la Mancha", "Der Hund", "Once upon a time"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, timeout: float = 180) -> subprocess.Popen | None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"{cmd[0]} {cmd[1]} exited: {proc.stderr.read().decode()[-400:]}")
            return None
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    print(f"{' '.join(cmd[:2])}: not answering after {timeout} s")
    return None


def one(base: str, model: str, prompt: str, max_tokens: int, chat: bool) -> tuple[float, int]:
    t0 = time.perf_counter()
    if chat:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "temperature": 0}  # fmt: skip
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    else:
        body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        r = httpx.post(f"{base}/v1/completions", json=body, timeout=600)
    r.raise_for_status()
    usage = r.json().get("usage") or {}
    return time.perf_counter() - t0, int(usage.get("completion_tokens", max_tokens))


def load(base: str, model: str, clients: int, requests: int, max_tokens: int, chat: bool) -> dict:
    jobs = [PROMPTS[i % len(PROMPTS)] for i in range(clients * requests)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(lambda p: one(base, model, p, max_tokens, chat), jobs))
    wall = time.perf_counter() - t0
    lat = sorted(d for d, _ in done)
    return {
        "tok/s": sum(n for _, n in done) / wall,
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="exported HF folder (both servers) or bloomforge checkpoint")
    ap.add_argument("--requests", type=int, default=20, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-batch", type=int, default=32)
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    servers: dict[str, tuple[str, str, bool]] = {}
    procs = []
    port = free_port()
    bf = start([sys.executable, "-m", "bloomforge", "serve", args.model, "--port", str(port),
                "--max-batch", str(args.max_batch), "--max-queue", "4096"],
               f"http://127.0.0.1:{port}/health")  # fmt: skip
    if bf is not None:
        procs.append(bf)
        servers["bloomforge serve"] = (f"http://127.0.0.1:{port}", "x", False)
    exe = shutil.which("transformers")
    if exe is None:
        print("transformers serve: the `transformers` command is not installed here; skipped")
    else:
        for cb in (False, True):
            port = free_port()
            cmd = [exe, "serve", "--port", str(port)] + (["--continuous-batching"] * cb)
            proc = start(cmd, f"http://127.0.0.1:{port}/v1/models", timeout=120)
            name = "transformers serve" + (" --continuous-batching" * cb)
            if proc is None:
                print(f"{name}: did not start offline here; skipped")
                continue
            procs.append(proc)
            servers[name] = (f"http://127.0.0.1:{port}", os.path.abspath(args.model), True)
    rows = []
    try:
        for clients in levels:  # alternate: every server at this level, then the next level
            for name, (base, model, chat) in servers.items():
                try:
                    one(base, model, PROMPTS[0], 2, chat)  # warm-up
                    r = load(base, model, clients, args.requests, args.max_tokens, chat)
                except httpx.HTTPError as e:
                    print(f"{name} at {clients} clients: failed ({e})")
                    continue
                rows.append((name, clients, r))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    print(f"\n{'server':<40} {'clients':>7} {'tok/s':>9} {'p50 s':>8} {'p99 s':>8}")
    for name, clients, r in rows:
        print(f"{name:<40} {clients:>7} {r['tok/s']:>9.1f} {r['p50']:>8.3f} {r['p99']:>8.3f}")


if __name__ == "__main__":
    main()
