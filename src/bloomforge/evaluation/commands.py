"""The `bloomforge eval` command: zero-shot tasks and perplexity of a checkpoint.

In: a checkpoint folder, `--tasks` names (builtin or from `--task-file` YAML) read under
`--data`, and/or `--perplexity LANG=PATH`. Out: a table on stdout and, with `--out`, the results
json (written to a temporary name, then renamed). Cheap to import: torch loads in the handler.
"""

from __future__ import annotations

import argparse

from bloomforge import files


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="zero-shot tasks and perplexity per language",
        description="Score a checkpoint on local zero-shot tasks (lm-eval's templates and "
        "metrics) and/or perplexity / bits per byte of texts per language.",
    )
    p.add_argument("ckpt", help="checkpoint folder")
    p.add_argument(
        "--tasks",
        default="",
        help="comma-separated: xcopa,copa,hellaswag,lambada,winogrande or names from --task-file",
    )
    p.add_argument("--task-file", action="append", default=[], help="task YAML (repeatable)")
    p.add_argument(
        "--prompts",
        action="append",
        default=[],
        metavar="TEMPLATES",
        help="promptsource templates (file or folder, repeatable): score --tasks under every "
        "prompt and report each prompt's accuracy and the median over prompts (BLOOMZ-style)",
    )
    p.add_argument("--data", default=None, help="folder holding the task files (eval data)")
    p.add_argument("--limit", type=int, default=None, help="first N examples per task/language")
    p.add_argument(
        "--perplexity",
        action="append",
        default=[],
        metavar="LANG=PATH",
        help="text file/folder (txt: one document per line; jsonl: 'text') (repeatable)",
    )
    p.add_argument("--batch-size", default="auto", help="int, or auto (CPU: 16; CUDA: probe)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-length", type=int, default=None, help="context (default: model's)")
    p.add_argument(
        "--no-share-context",
        action="store_true",
        help="run each choice's context again instead of once per example (for comparison)",
    )
    p.add_argument(
        "--normalize-over",
        default="logits",
        choices=["logits", "tokenizer"],
        help="log-softmax over all output rows, the vocabulary's padding rows too (default: as "
        "transformers, lm-eval's hf model and BLOOM's published scores), or over the "
        "tokenizer's vocabulary only",
    )
    p.add_argument("--out", default=None, help="write results json here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch
    from rich.progress import Progress

    from bloomforge.devices import resolve_device
    from bloomforge.errors import BloomforgeError
    from bloomforge.evaluation.config import EvalConfig
    from bloomforge.evaluation.evaluate import format_table, read_perplexity_texts
    from bloomforge.evaluation.run import evaluate, load_scorer
    from bloomforge.evaluation.tasks import get_task, load_task_file

    for f in args.task_file:
        load_task_file(f)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names and not args.perplexity:
        raise BloomforgeError("nothing to do: give --tasks and/or --perplexity LANG=PATH")
    for name in names:
        get_task(name)
    if names and args.data is None:
        raise BloomforgeError("--tasks needs --data (the folder with xcopa/, copa/, ...)")
    batch_size = args.batch_size
    if batch_size != "auto":
        if not batch_size.isdigit() or int(batch_size) < 1:
            raise BloomforgeError(f"--batch-size: a positive integer or auto, got {batch_size}")
        batch_size = int(batch_size)
    if args.limit is not None and args.limit < 1:
        raise BloomforgeError("--limit must be >= 1")
    if args.prompts:
        from bloomforge.evaluation.prompted import load_prompts

        if not names:
            raise BloomforgeError("--prompts needs --tasks (the records to render)")
        load_prompts(args.prompts)  # before loading the checkpoint
    cfg = EvalConfig(tasks=names, data=args.data, limit=args.limit, prompts=args.prompts)

    device = resolve_device(args.device, "--device")
    texts = read_perplexity_texts(args.perplexity) if args.perplexity else ()

    t0 = time.perf_counter()
    scorer = load_scorer(
        args.ckpt,
        device,
        batch_size,
        getattr(torch, args.dtype),
        max_length=args.max_length,
        share_context=not args.no_share_context,
        normalize_over=args.normalize_over,
    )
    results: dict = {
        "checkpoint": str(Path(args.ckpt).resolve()),
        "config": {
            "tasks": names,
            "prompts": args.prompts,
            "data": args.data,
            "limit": args.limit,
            "batch_size": args.batch_size,
            "device": device,
            "dtype": args.dtype,
            "max_length": scorer.max_length,
            "share_context": scorer.share_context,
            "normalize_over": scorer.normalize_over,
        },
    }
    with Progress(transient=True) as bar:

        def progress(what: str, total: int | None):
            job = bar.add_task(what, total=total)
            return lambda n: bar.advance(job, n)

        results.update(evaluate(scorer, cfg, texts, progress))
    results["seconds"] = round(time.perf_counter() - t0, 2)
    if "prompted" in results:
        from bloomforge.evaluation.prompted import format_prompted

        print(format_prompted(results["prompted"]))
    if "tasks" in results or "perplexity" in results:
        print(format_table(results))
    print(f"({results['seconds']} s)")
    if args.out:
        files.write_json(args.out, results, indent=2, ensure_ascii=True)
    return 0
