"""`bloomforge ablate GRID.yaml --out DIR [--resume] [--workers N]`.

In: argv parsed by `bloomforge.cli`. Out: OUT/runs/<variant>/ run folders, OUT/report.md,
results.csv, results.json and PNG plots; the markdown table on stdout. Heavy imports (torch,
matplotlib) stay in the handler.
"""

from __future__ import annotations

import argparse


def add_ablate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ablate", help="train and compare recipe variants on one token budget (a grid file)"
    )
    p.add_argument("grid", help="grid YAML: base, overrides, vary, eval (docs/ablations.md)")
    p.add_argument("--out", required=True, help="folder for runs/ and the report")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse finished variants and resume interrupted ones in --out",
    )
    p.add_argument("--workers", type=int, default=1, help="variants trained in parallel")
    p.add_argument(
        "--list", action="store_true", help="validate the grid and list its variants only"
    )
    p.set_defaults(func=_run_ablate)


def _run_ablate(args: argparse.Namespace) -> int:
    from bloomforge.errors import BloomforgeError
    from bloomforge.science.ablate import check_out, load_grid, run_grid
    from bloomforge.science.ablate_report import markdown_table, table_rows, write_report

    if args.workers < 1:
        raise BloomforgeError("--workers must be >= 1")
    grid = load_grid(args.grid, args.out)
    if args.list:
        for v in grid.variants:
            print(f"{v.name}\t{v.run}")
        return 0
    check_out(grid, args.resume)
    print(f"{len(grid.variants)} variants: {', '.join(v.name for v in grid.variants)}")
    results = run_grid(grid, args.workers)
    paths = write_report(grid, results, args.out)
    print(markdown_table(table_rows(results, grid.eval)))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
