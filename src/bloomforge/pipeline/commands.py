"""`bloomforge run RECIPE --out DIR` and `bloomforge demo`: every stage in one run folder.

In: argv parsed by `bloomforge.cli`. Out: the run folder (see `bloomforge.pipeline`) and a line
per stage on stdout. Cheap to import: the pipeline is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys

_STAGE_HELP = "corpus, data, tokenizer, tokens, train, eval, export, report"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="first", metavar="STAGE", help=f"first stage ({_STAGE_HELP})")
    p.add_argument("--until", dest="last", metavar="STAGE", help="last stage to run")
    p.add_argument(
        "--force", action="store_true", help="re-run the selected stages even when up to date"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_tokens=2e6")


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="every stage of a recipe in one run folder, each skipped when up to date",
        description="Run data -> tokenizer -> tokens -> train -> eval -> export -> report in "
        "one run folder. A stage re-runs only when its settings or its inputs changed.",
    )
    run.add_argument("recipe", help="run recipe (YAML)")
    run.add_argument("--out", required=True, help="run folder, e.g. runs/x")
    _common(run)
    run.set_defaults(func=_run)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline on text found on this machine (nothing downloaded)",
        description="Gather translated message catalogues (/usr/share/locale) and the Python "
        "standard library, then run every stage of the embedded demo recipe.",
    )
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument(
        "--small", action="store_true", help="CI size: the same pipeline in a minute or two"
    )
    demo.add_argument(
        "--print-recipe", action="store_true", help="print the embedded recipe and exit"
    )
    _common(demo)
    demo.set_defaults(func=_demo)


def _execute(recipe, args: argparse.Namespace) -> int:
    from pathlib import Path

    from bloomforge.outputs import claim_output
    from bloomforge.pipeline.layout import RunLayout
    from bloomforge.pipeline.runner import Context, enterable, recipe_inputs, run_stages
    from bloomforge.pipeline.stages import pipeline_stages

    out = Path(args.out)
    stages = pipeline_stages(recipe)
    inputs = [getattr(args, "recipe", None), *recipe_inputs(recipe)]
    # A run re-enters its own folder (stages skipped when up to date) or one holding stage
    # outputs made by hand; never a training run folder, an input, or a folder of other things.
    with claim_output(out, inputs=inputs, reenter=lambda f: enterable(f, stages)):
        records = run_stages(Context(out, recipe), stages, args.first, args.last, args.force)
    ran = [s for s, r in records.items() if not r["skipped"]]
    print(f"{out}: ran {', '.join(ran) or 'nothing (all up to date)'}")
    stopped = [f"{s} ({r['stopped']})" for s, r in records.items() if r.get("stopped")]
    if stopped:
        print(
            f"bloomforge: stopped in {stopped[0]}; run the same command to resume", file=sys.stderr
        )
        return 130
    report = RunLayout(out).report_html
    if report.exists():
        print(f"report: {report}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from bloomforge.recipe import load_recipe

    return _execute(load_recipe(args.recipe, args.overrides), args)


def _demo(args: argparse.Namespace) -> int:
    from bloomforge.pipeline.config import demo_recipe_data, demo_recipe_text
    from bloomforge.recipe import Recipe
    from bloomforge.typed_config import apply_overrides, from_dict

    if args.print_recipe:
        print(demo_recipe_text(args.small), end="")
        return 0
    data = apply_overrides(demo_recipe_data(args.small), args.overrides)
    return _execute(from_dict(Recipe, data), args)
