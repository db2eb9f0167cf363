"""The `bloomforge` command line: one subcommand per pipeline stage.

In: argv. Out: the stage's files and a short report on stdout; progress logged in one format
(`bloomforge.log`); bad input ends with one line `bloomforge: <what, where>` on stderr and exit
status 2 (tracebacks are for bugs only).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bloomforge import log
from bloomforge.errors import BloomforgeError

# Each stage package adds its own commands: `register(commands)` on the top-level subparsers.
# These modules must stay cheap to import (no torch at module level) so `--help` stays fast.
_COMMAND_MODULES = (
    "bloomforge.model.commands",  # model info | init, generate
    "bloomforge.interop.commands",  # import, export
    "bloomforge.tokenizer.commands",  # tokenizer train | fertility
    "bloomforge.data.commands",  # data prepare | report | tokenize
    "bloomforge.training.commands",  # train
    "bloomforge.evaluation.commands",  # eval
    "bloomforge.science.commands",  # plan, scaling, ablate, carbon
    "bloomforge.pipeline.commands",  # run, demo
    "bloomforge.serve.commands",  # serve
    "bloomforge.mtf.commands",  # mtf build
)


def main(argv: Sequence[str] | None = None) -> int:
    log.configure()  # one console format for what every command logs (bloomforge.log)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may also follow options (`train r.yaml --dry-run a.b=1`).
    if extra:
        if isinstance(getattr(args, "overrides", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra
        ):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except BloomforgeError as e:
        print(f"bloomforge: {log.rank_prefix()}{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bloomforge: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bloomforge",
        description="Train multilingual BLOOM-family language models the way BigScience did.",
    )
    sub = p.add_subparsers(title="stages", metavar="COMMAND")

    for module in _COMMAND_MODULES:
        try:
            commands = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            continue
        commands.register(sub)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
