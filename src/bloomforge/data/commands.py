"""CLI for the data stage: `bloomforge data prepare | report | inspect | search | tokenize`.

In: argv parsed by `bloomforge.cli`. Out: the stage's files and a short summary on stdout.
Kept cheap to import: the engines are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bloomforge.documents.inputs import add_input_argument


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare, report and tokenize multilingual text")
    sub = data.add_subparsers(title="data commands", metavar="ACTION")
    data.set_defaults(func=lambda args: data.print_help() or 0)

    _register_prepare(sub)
    _register_report(sub)
    _register_inspect(sub)

    tok = sub.add_parser(
        "tokenize",
        help="documents -> memory-mapped token shards (datatrove .ds) with a manifest",
        description="Tokenize documents into datatrove-format token shards, one folder per "
        "source and language, an EOS after every document, and a manifest with counts.",
    )
    tok.add_argument("--tokenizer", required=True, help="tokenizer.json or a folder holding one")
    add_input_argument(tok, required=True)
    tok.add_argument(
        "--out",
        required=True,
        help="token folder to write, new or empty (built aside, then renamed)",
    )
    tok.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when it is a non-empty folder (never a training run folder)",
    )
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
    from bloomforge.documents.inputs import spec_paths
    from bloomforge.outputs import claim_output

    inputs = [args.tokenizer, *spec_paths(args.input)]
    with claim_output(args.out, inputs=inputs, overwrite=args.overwrite):
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


def _register_prepare(sub: argparse._SubParsersAction) -> None:
    prep = sub.add_parser(
        "prepare",
        help="raw sources -> filtered, deduplicated, PII-redacted documents with stats.json",
        description="Prepare multilingual text as BigScience did for ROOTS, on datatrove: read "
        "each source (jsonl/parquet/txt, gz/zst), identify languages, apply the ROOTS filters, "
        "deduplicate, redact PII, and count every removal per source, language and step. "
        "A rerun on the same --out skips finished tasks.",
    )
    given = prep.add_mutually_exclusive_group(required=True)
    given.add_argument("--config", help="data.yaml (sources, filters, dedup, pii, slurm, ray)")
    add_input_argument(given, help="one source, named NAME, else after its first file")
    prep.add_argument("--out", required=True, help="prepared folder (created or resumed)")
    prep.add_argument("--workers", type=int, default=1, help="tasks run at once (default 1)")
    prep.add_argument(
        "--executor",
        choices=("local", "slurm", "ray"),
        default="local",
        help="datatrove executor (slurm/ray options: the config's slurm:/ray: sections)",
    )
    prep.add_argument("--no-filters", action="store_true", help="with --input: no LID/filters")
    prep.add_argument("--no-dedup", action="store_true", help="with --input: no deduplication")
    prep.add_argument("--no-pii", action="store_true", help="with --input: no PII redaction")
    prep.add_argument(
        "--max-doc-bytes",
        type=int,
        metavar="N",
        help="set aside records larger than N bytes as too_large when read (default 5000000, "
        "or the config's max_doc_bytes; 0: no limit)",
    )
    prep.set_defaults(func=_run_prepare)


def _register_report(sub: argparse._SubParsersAction) -> None:
    rep = sub.add_parser(
        "report",
        help="prepared folder -> report.html with PNG figures and a data card",
        description="Draw the ROOTS-style report of a prepared folder: removal rates per "
        "language and per filter, byte and document shares, dedup rates, PII counts.",
    )
    rep.add_argument("prepared", help="folder written by `data prepare` (holding stats.json)")
    rep.set_defaults(func=_run_report)


def _run_prepare(args: argparse.Namespace) -> int:
    from bloomforge.data.prepare import config_from_inputs, load_prepare_config, prepare
    from bloomforge.errors import BloomforgeError

    if args.max_doc_bytes is not None and args.max_doc_bytes < 0:
        raise BloomforgeError(f"--max-doc-bytes {args.max_doc_bytes}: 0 (no limit) or more")
    if args.config:
        if args.no_filters or args.no_dedup or args.no_pii:
            raise BloomforgeError(
                "--no-filters/--no-dedup/--no-pii go with --input; "
                "with --config set filters/dedup/pii per source"
            )
        config = load_prepare_config(args.config)
        if args.max_doc_bytes is not None:
            config.max_doc_bytes = args.max_doc_bytes
    else:
        config = config_from_inputs(
            args.input, not args.no_filters, not args.no_dedup, not args.no_pii
        )
        if args.max_doc_bytes is not None:
            config.max_doc_bytes = args.max_doc_bytes
    from bloomforge.documents.inputs import spec_paths
    from bloomforge.outputs import claim_output

    # A new or empty folder, or an earlier prepare run's own (a rerun skips finished tasks);
    # never an input, a folder of other things or a training run. One writer at a time.
    inputs = [*spec_paths(args.input or []), args.config]
    with claim_output(
        args.out, inputs=inputs, reenter=lambda folder: (folder / "config.yaml").is_file()
    ):
        stats = prepare(config, args.out, workers=args.workers, executor=args.executor)
    if "submitted" in stats:
        print(
            f"submitted {len(stats['submitted'])} Slurm stages; stats.json is written "
            f"to {args.out} by the last one"
        )
        return 0
    for source, t in stats["totals"].items():
        print(_source_summary(source, t, stats["reader"].get(source, {})))
    print(f"wrote {args.out}/documents and {args.out}/stats.json")
    return 0


def _source_summary(source: str, totals: dict, reader: dict) -> str:
    """`  web: 1,200 documents read (3 malformed records set aside), 40 removed, 1,160 kept`,
    then the input files that gave no document, by name."""
    from bloomforge.documents.inputs import TOO_LARGE

    removed = sum(n for reasons in totals["removed"].values() for n in reasons.values())
    skipped = reader.get("skipped", {})
    too_large = skipped.get(TOO_LARGE, 0)
    aside = f"{sum(skipped.values()) - too_large:,} malformed records"
    if too_large:
        aside += f" and {too_large:,} over max_doc_bytes"
    line = (
        f"  {source}: {totals['read']:,} documents read ({aside} set aside in malformed/), "
        f"{removed:,} removed, {totals['final']:,} kept"
    )
    files = reader.get("files", {})
    empty = [f for f, n in files.items() if n["records"] == 0]
    none = [f for f, n in files.items() if n["records"] and not n["documents"]]
    if empty:
        line += f"; empty input file{'s' if len(empty) > 1 else ''}: {', '.join(empty)}"
    if none:
        line += f"; no documents in: {', '.join(none)}"
    return line


def _run_report(args: argparse.Namespace) -> int:
    import contextlib

    from bloomforge.data.report import write_report
    from bloomforge.outputs import output_lock

    prepared = Path(args.prepared)
    # Not while `data prepare` (or another report) writes the folder; a missing folder is
    # write_report's one-line error, and no lock (nor parent folder) is made for it.
    lock = output_lock(prepared) if prepared.is_dir() else contextlib.nullcontext()
    with lock:
        _check_report_targets(prepared)
        html = write_report(prepared)
    print(f"wrote {html}")
    return 0


def _check_report_targets(prepared: Path) -> None:
    """PREPARED/report/ and PREPARED/report.html are replaced: only an earlier report's."""
    from bloomforge.errors import BloomforgeError

    if not prepared.is_dir():
        return
    folder, page = prepared / "report", prepared / "report.html"
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise BloomforgeError(f"{folder}: is not a folder; move it away first")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "DATA_CARD.md").is_file():
        raise BloomforgeError(f"{folder}: not an earlier data report; move it away first")
    if page.is_dir() or page.is_symlink():
        raise BloomforgeError(f"{page}: is not a file; move it away first")
    if page.exists():
        with open(page, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
        if "<title>bloomforge data report</title>" not in head:
            raise BloomforgeError(f"{page}: not an earlier data report; move it away first")


def _register_inspect(sub: argparse._SubParsersAction) -> None:
    ins = sub.add_parser(
        "inspect",
        help="prepared folder -> HTML page of what each filter and dedup step removed",
        description="Write a static HTML viewer of a prepared folder: per language and filter, "
        "a sample of the removed documents with the filter's value and threshold and the kept "
        "documents nearest it; duplicate clusters with the kept and removed copies side by side; "
        "PII counts by type (never the originals, which stay in restricted/).",
    )
    ins.add_argument("prepared", help="folder written by `data prepare` (holding stats.json)")
    ins.add_argument("--out", help="HTML file to write (default PREPARED/inspect.html)")
    ins.add_argument(
        "--sample",
        type=int,
        default=10,
        help="documents (and clusters) shown per language and step (default 10)",
    )
    ins.add_argument(
        "--scan",
        type=int,
        default=2000,
        help="kept documents read per source and language to find those nearest each "
        "threshold (default 2000)",
    )
    ins.set_defaults(func=_run_inspect)

    search = sub.add_parser(
        "search",
        help="full-text search of a prepared folder's documents (SQLite FTS5), with provenance",
        description="Search the documents of a prepared folder. The index "
        "(PREPARED/search/index.sqlite) is built on first use and updated when files under "
        "documents/ are added, changed or removed. QUERY is FTS5 syntax: words (all must "
        'match), "a phrase", OR, NOT, prefix*.',
    )
    search.add_argument("prepared", help="folder written by `data prepare`")
    search.add_argument("query", help="what to look for")
    search.add_argument("--lang", help="only documents of this language (e.g. fr)")
    search.add_argument("--source", help="only documents of this source")
    search.add_argument("--limit", type=int, default=10, help="hits shown (default 10)")
    search.set_defaults(func=_run_search)


def _run_inspect(args: argparse.Namespace) -> int:
    import contextlib

    from bloomforge.data.inspect import write_viewer
    from bloomforge.outputs import output_lock

    prepared = Path(args.prepared)
    # Not while `data prepare` writes the folder (its files would be half written).
    lock = output_lock(prepared) if prepared.is_dir() else contextlib.nullcontext()
    with lock:
        page = write_viewer(prepared, args.out, sample=args.sample, scan=args.scan)
    print(f"wrote {page}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    import contextlib

    from bloomforge.data.search import format_hit, search

    prepared = Path(args.prepared)
    from bloomforge.outputs import output_lock

    lock = output_lock(prepared) if prepared.is_dir() else contextlib.nullcontext()
    with lock:
        hits = search(prepared, args.query, lang=args.lang, limit=args.limit, source=args.source)
    for hit in hits:
        print(format_hit(hit))
    if not hits:
        where = f" in language {args.lang}" if args.lang else ""
        print(f"no document matches {args.query!r}{where}")
    return 0
