"""CLI for the data stage: `bloomforge data tokenize` (`data prepare` / `data report`: issue 6).

In: argv parsed by `bloomforge.cli`. Out: the stage's files and a short summary on stdout.
Kept cheap to import: the engines are imported inside the handlers.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare and tokenize multilingual text")
    sub = data.add_subparsers(title="data commands", metavar="ACTION")
    data.set_defaults(func=lambda args: data.print_help() or 0)

    tok = sub.add_parser(
        "tokenize",
        help="documents -> memory-mapped token shards (datatrove .ds) with a manifest",
        description="Tokenize documents into datatrove-format token shards, one folder per "
        "source and language, an EOS after every document, and a manifest with counts.",
    )
    tok.add_argument("--tokenizer", required=True, help="tokenizer.json or a folder holding one")
    tok.add_argument(
        "--input",
        required=True,
        nargs="+",
        action="extend",
        metavar="[LANG=]PATH",
        help="txt (one document per line), jsonl(.gz/.zst) or prepared output; file, glob or "
        "folder; LANG= sets the language",
    )
    tok.add_argument("--out", required=True, help="token folder to write (replaced when complete)")
    tok.add_argument(
        "--workers", type=int, default=None, help="encoding threads (default: CPU cores)"
    )
    tok.add_argument(
        "--shard-tokens",
        type=int,
        default=2**28,
        help="start a new shard past this many tokens (default 2**28)",
    )
    tok.add_argument("--no-progress", action="store_true", help="no progress display")
    tok.set_defaults(func=_run_tokenize)


def _run_tokenize(args: argparse.Namespace) -> int:
    import sys

    from bloomforge.data.tokenize import tokenize_corpus

    m = tokenize_corpus(
        args.tokenizer,
        args.input,
        args.out,
        workers=args.workers,
        shard_tokens=args.shard_tokens,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    tokens = sum(s["tokens"] for s in m["shards"])
    docs = sum(s["documents"] for s in m["shards"])
    mb = m["read"]["bytes"] / 1e6
    print(
        f"wrote {args.out}: {tokens:,} tokens, {docs:,} documents, {len(m['shards'])} shards "
        f"({m['dtype']}), {mb:,.1f} MB in {m['seconds']:.1f} s "
        f"({mb / max(m['seconds'], 1e-9):,.1f} MB/s)"
    )
    for source, langs in m["sources"].items():
        for lang, c in langs.items():
            print(f"  {source}/{lang}: {c['tokens']:,} tokens, {c['documents']:,} documents")
    skipped = m["read"]["skipped"]
    if skipped:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        print(f"skipped {sum(skipped.values())} records ({parts}); see manifest.json 'read'")
    return 0
