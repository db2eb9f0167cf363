"""The `bloomforge mtf` commands: `mtf build` renders prompted data in xP3's format.

In: `--templates` roots, `--task NAME=PATH` datasets, caps and a seed. Out: the `--out` folder
(see bloomforge.mtf.build). Cheap to import: the builder loads in the handler.
"""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    mtf = commands.add_parser("mtf", help="multitask prompted data (xP3-style) for finetuning")
    sub = mtf.add_subparsers(dest="mtf_command", metavar="{build}")
    p = sub.add_parser(
        "build",
        help="render promptsource templates over local datasets into {inputs, targets} jsonl",
        description="Render promptsource-format templates over local datasets and write one "
        "xP3-style jsonl per language ({inputs, targets} + provenance) and manifest.json.",
    )
    p.add_argument(
        "--templates",
        action="append",
        required=True,
        help="folder of promptsource templates.yaml files, or one such file (repeatable)",
    )
    p.add_argument(
        "--task",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="dataset to render: xquad, tatoeba or hellaswag = its folder or file (repeatable)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--max-per-dataset",
        type=int,
        default=None,
        metavar="N",
        help="at most N records per dataset and language, shared by its templates (seeded)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling and `choice` filter seed")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from bloomforge.mtf.build import build, parse_task
    from bloomforge.outputs import claim_output

    tasks = [parse_task(spec) for spec in args.task]
    inputs = [*args.templates, *(t.path for t in tasks)]
    with claim_output(args.out, inputs=inputs, overwrite=args.overwrite) as out:
        manifest = build(
            tasks, args.templates, out, max_per_dataset=args.max_per_dataset, seed=args.seed
        )
    totals = manifest["totals"]
    print(
        f"mtf build: {totals['written']} records in {len(manifest['files'])} language file(s) "
        f"under {args.out} ({totals['skipped']} skipped by templates, "
        f"{totals['malformed_records']} malformed records set aside; see manifest.json)"
    )
    return 0
