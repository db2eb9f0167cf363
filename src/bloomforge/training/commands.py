"""`bloomforge train RECIPE [key=value ...] [--resume] [--dry-run]`, alone or under torchrun.

In: a recipe file (or a run's config.yaml) and overrides. Out: a run folder (see
`bloomforge.training.loop`), or with --dry-run a summary of the run without training. Under
`torchrun` (WORLD_SIZE > 1) every process joins the process group and trains its part of the
layout in `parallel.*`; only rank 0 writes logs and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="train a model from a recipe (one process, or under torchrun)"
    )
    p.add_argument("recipe", help="recipe.yaml, or a run's config.yaml to continue it")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_tokens=2e6")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print parameters, FLOPs/token, steps and batch schedule, then exit",
    )
    p.add_argument("--json", action="store_true", help="print the summary as json")
    p.set_defaults(func=_run_train, finetune=False)

    f = commands.add_parser(
        "finetune",
        help="multitask prompted finetuning, BLOOMZ-style: init=CHECKPOINT data.mtf=XP3_FOLDER",
    )
    f.add_argument("recipe", help="recipe.yaml (e.g. recipes/bloomz-560m.yaml) or a run's config")
    f.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides: init=CKPT_OR_HF_DIR data.mtf=xp3/ out=runs/z ...",
    )
    f.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    f.add_argument("--dry-run", action="store_true", help="print the run's plan, then exit")
    f.add_argument("--json", action="store_true", help="print the summary as json")
    f.set_defaults(func=_run_train, finetune=True)


def _run_train(args: argparse.Namespace) -> int:
    from bloomforge.errors import BloomforgeError
    from bloomforge.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.finetune:
        if not recipe.data.mtf:
            raise BloomforgeError(
                "finetune: data.mtf is not set (a folder from `bloomforge mtf build`, or your "
                "own xP3 jsonl)"
            )
        if not recipe.init and not args.resume:
            raise BloomforgeError(
                "finetune: init is not set (the checkpoint, run folder or Hugging Face BLOOM "
                "folder to start from)"
            )
    if args.dry_run:
        from bloomforge.science.dry_run import describe_run, format_run

        if recipe.init:  # the model's shape is the init's
            import dataclasses

            from bloomforge.training import init as init_mod

            model = init_mod.init_model_config(recipe.init)
            recipe = dataclasses.replace(
                recipe, model=init_mod.merge_model(recipe.model, model, recipe.init)
            )
        info = describe_run(recipe)
        print(json.dumps(info, indent=2) if args.json else format_run(info))
        return 0
    from bloomforge.parallel.env import init_distributed, launched_by_torchrun
    from bloomforge.training.train import train

    rank, world_size = 0, 1
    if launched_by_torchrun():
        rank, world_size = init_distributed(recipe.train.device)
    from bloomforge.errors import RunStopped

    try:
        with _claim_run_folder(recipe, rank, world_size):
            summary = train(recipe, args.resume, rank, world_size).summary
    except RunStopped as e:
        if rank == 0:
            print(f"bloomforge: {e}", file=sys.stderr)
        return 1
    finally:
        if world_size > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank != 0:
        return 0
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(
            f"done: step {summary['step']}, {summary['tokens']:,} tokens, "
            f"{summary['skipped']} skipped steps; checkpoint {summary['checkpoint']}"
        )
    return 0


@contextlib.contextmanager
def _claim_run_folder(recipe, rank: int, world_size: int) -> Iterator[None]:
    """Rank 0 checks `out` (a new folder, an empty one or this run's own; never an input or a
    folder of other things) and holds its lock for the whole run, so a second `bloomforge
    train out=` of the same folder stops with a message naming the owner. Every rank learns
    whether rank 0 got it."""
    from bloomforge.errors import BloomforgeError
    from bloomforge.outputs import claim_output

    with contextlib.ExitStack() as stack:
        error = None
        if rank == 0 and recipe.out:
            try:
                stack.enter_context(
                    claim_output(
                        recipe.out,
                        inputs=[
                            recipe.data.tokens,
                            recipe.data.mtf,
                            recipe.tokenizer.path,
                            recipe.init,
                        ],
                        allow_run_folder=True,
                        reenter=lambda folder: (folder / "config.yaml").is_file(),
                    )
                )
            except BloomforgeError as e:
                error = e
        if world_size > 1:
            import torch
            import torch.distributed as dist

            flag = torch.tensor([1.0 if error else 0.0])
            if dist.get_backend() == "nccl":
                flag = flag.cuda()
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and error is None:
                raise BloomforgeError(f"out={recipe.out}: rank 0 could not claim the run folder")
        if error is not None:
            raise error
        yield
