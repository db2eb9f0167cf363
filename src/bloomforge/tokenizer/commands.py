"""`bloomforge tokenizer train | fertility`: the tokenizer stage's command line.

In: argv parsed by `bloomforge.cli`. Out: `train` writes `OUT/tokenizer.json` + `OUT/sampling.json`
and prints the sampling used; `fertility` prints a markdown table (and with `--out DIR` writes
`fertility.md` + `fertility.json`). Cheap to import: the work is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
import time

from bloomforge.documents.inputs import add_input_argument
from bloomforge.tokenizer.config import TokenizerConfig

# The defaults are the recipe's tokenizer section's (what `bloomforge run` trains with).
_DEFAULT = TokenizerConfig()
_ALPHA = _DEFAULT.alpha
_MAX_BYTES = _DEFAULT.max_bytes_per_language


def register(commands: argparse._SubParsersAction) -> None:
    tok = commands.add_parser(
        "tokenizer", help="train a byte-level BPE tokenizer; fertility tables (BLOOM-style)"
    )
    tok.set_defaults(func=lambda _args: tok.print_help() or 0)
    sub = tok.add_subparsers(title="tokenizer commands", metavar="ACTION")

    train = sub.add_parser("train", help="train a BLOOM-style byte-level BPE tokenizer")
    add_input_argument(train, required=True)
    train.add_argument(
        "--vocab-size",
        type=int,
        default=_DEFAULT.vocab_size,
        help=f"default {_DEFAULT.vocab_size}",
    )
    train.add_argument(
        "--alpha", type=float, default=_ALPHA, help="language sampling p ∝ n^alpha (BLOOM: 0.3)"
    )
    train.add_argument(
        "--max-bytes-per-language",
        type=float,
        default=_MAX_BYTES,
        help="cap on the bytes any language contributes after sampling (default 1e9)",
    )
    train.add_argument(
        "--min-frequency", type=int, default=_DEFAULT.min_frequency, help="BPE min pair count"
    )
    train.add_argument(
        "--seed", type=int, default=_DEFAULT.seed, help="seed of the document sampling"
    )
    train.add_argument("--text-key", default="text", help="jsonl field with the text")
    train.add_argument("--out", required=True, help="output folder (tokenizer.json), new or empty")
    _add_overwrite(train)
    train.set_defaults(func=_run_train)

    fert = sub.add_parser("fertility", help="tokens per word per language vs references")
    fert.add_argument("--tokenizer", required=True, help="tokenizer.json or a folder with one")
    add_input_argument(
        fert, "--text", required=True, help="evaluation text; X.words beside X.txt gives the words"
    )
    fert.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="reference tokenizer.json or folder (repeatable)",
    )
    fert.add_argument(
        "--monolingual-baselines",
        action="store_true",
        help="train a monolingual tokenizer per language as the reference (as BLOOM did)",
    )
    fert.add_argument("--baseline-vocab-size", type=int, default=8000, help="default 8000")
    fert.add_argument(
        "--train-text",
        action="append",
        default=[],
        metavar="LANG=PATH",
        help="training text of a language's baseline (default: that language's --text)",
    )
    fert.add_argument("--max-bytes-per-language", type=float, default=_MAX_BYTES)
    fert.add_argument("--seed", type=int, default=0)
    fert.add_argument("--out", help="folder for fertility.md and fertility.json, new or empty")
    _add_overwrite(fert)
    fert.set_defaults(func=_run_fertility)


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out when it is a non-empty folder (never a training run folder)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from bloomforge.documents.inputs import parse_inputs, spec_paths
    from bloomforge.outputs import claim_output
    from bloomforge.tokenizer.train import check_vocab_size

    check_vocab_size(args.vocab_size)  # before reading gigabytes
    specs = parse_inputs(args.input)
    inputs = spec_paths(args.input)
    with claim_output(args.out, inputs=inputs, overwrite=args.overwrite):  # before training
        return _train_into(args, specs)


def _train_into(args: argparse.Namespace, specs: list) -> int:
    from bloomforge.tokenizer.train import (
        format_sampling,
        progress_enabled,
        save_trained,
        train_tokenizer,
    )

    start = time.perf_counter()
    result = train_tokenizer(
        specs,
        args.vocab_size,
        args.alpha,
        int(args.max_bytes_per_language),
        args.seed,
        args.min_frequency,
        args.text_key,
        show_progress=progress_enabled(),
    )
    seconds = time.perf_counter() - start
    out = save_trained(args.out, result, args.vocab_size)
    print(f"read {result.read_stats.summary()}")
    print(format_sampling(result.plan))
    got = result.tokenizer.get_vocab_size()
    note = "" if got == args.vocab_size else f" (asked {args.vocab_size}: not enough text)"
    print(f"wrote {out}/tokenizer.json: {got} tokens{note}; {seconds:.1f} s")
    return 0


def _run_fertility(args: argparse.Namespace) -> int:
    from bloomforge.documents.inputs import spec_paths
    from bloomforge.outputs import claim_output

    if not args.out:
        return _fertility(args)
    inputs = [
        args.tokenizer,
        *spec_paths(args.text),
        *spec_paths(args.reference),
        *spec_paths(args.train_text),
    ]
    with claim_output(args.out, inputs=inputs, overwrite=args.overwrite):
        return _fertility(args)


def _fertility(args: argparse.Namespace) -> int:
    from bloomforge.documents.inputs import ReadStats, parse_inputs
    from bloomforge.errors import BloomforgeError
    from bloomforge.tokenizer.fertility import load_eval_texts
    from bloomforge.tokenizer.report import Baselines, fertility_report

    references: dict[str, str] = {}
    for spec in args.reference:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise BloomforgeError(f"--reference '{spec}': expected NAME=PATH")
        if name in references:
            raise BloomforgeError(f"--reference '{spec}': name '{name}' is already used")
        references[name] = path
    if not references and not args.monolingual_baselines:
        print("no --reference or --monolingual-baselines: reporting our tokenizer only")
    stats = ReadStats()
    texts = load_eval_texts(parse_inputs(args.text), stats)
    if stats.skipped:
        print(f"--text: {stats.summary()}", file=sys.stderr)
    baselines = None
    if args.monolingual_baselines:
        train_specs: dict = {}
        for spec in args.train_text:
            lang, sep, _ = spec.partition("=")
            if not sep:
                raise BloomforgeError(f"--train-text '{spec}': expected LANG=PATH")
            train_specs.setdefault(lang, []).extend(parse_inputs([spec]))
        baselines = Baselines(
            args.baseline_vocab_size, train_specs, int(args.max_bytes_per_language), args.seed
        )
    report = fertility_report(args.tokenizer, texts, references, baselines)
    print(report.markdown)
    if args.out:
        from bloomforge import files

        with files.atomic_directory(args.out) as tmp:
            report.write(tmp)
        print(f"wrote {args.out}/fertility.md and fertility.json")
    return 0
