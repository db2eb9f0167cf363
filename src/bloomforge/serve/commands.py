"""The `bloomforge serve` command: an OpenAI-compatible completions server for a checkpoint.

In: a checkpoint, run or exported HF folder; host, port, limits. Out: a running server until
Ctrl-C. Cheap to import: torch, FastAPI and uvicorn load in the handler.
"""

from __future__ import annotations

import argparse

KEEP_ALIVE_S = 30


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve",
        help="OpenAI-compatible completions API (+ playground page) for a checkpoint",
        description="Serve a checkpoint over HTTP with the OpenAI completions protocol "
        "(lm-eval's local-completions and the openai client work unchanged).",
    )
    p.add_argument("ckpt", help="checkpoint folder, run folder or exported HF folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--name", default=None, help="model id in the API (default: folder name)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    p.add_argument("--max-batch", type=int, default=8, help="rows per forward pass")
    p.add_argument("--max-queue", type=int, default=64, help="waiting rows before 429")
    p.add_argument("--max-tokens", type=int, default=512, help="new tokens per completion")
    p.add_argument("--max-n", type=int, default=16, help="largest n")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from bloomforge.devices import resolve_device
    from bloomforge.errors import BloomforgeError
    from bloomforge.serve.app import create_app
    from bloomforge.serve.engine import Limits
    from bloomforge.serve.loading import load_engine

    for flag in ("max_batch", "max_queue", "max_tokens", "max_n", "port"):
        if getattr(args, flag) < 1:
            raise BloomforgeError(f"--{flag.replace('_', '-')} must be >= 1")
    if args.timeout <= 0:
        raise BloomforgeError("--timeout must be > 0")
    limits = Limits(
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        max_tokens=args.max_tokens,
        max_n=args.max_n,
        timeout_s=args.timeout,
    )
    device = resolve_device(args.device, "--device")
    engine = load_engine(args.ckpt, device, getattr(torch, args.dtype), limits, args.name)
    print(f"bloomforge serve: {engine.name} on http://{args.host}:{args.port}/ ({device})")
    uvicorn.run(
        create_app(engine, args.api_key),
        host=args.host,
        port=args.port,
        log_level="warning",
        # longer than clients keep idle connections (httpx 5 s, aiohttp 15 s): a client never
        # sends on a connection the server is closing (uvicorn's 5 s default races httpx's)
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0
