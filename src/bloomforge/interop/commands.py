"""`bloomforge import HF_DIR OUT` and `bloomforge export CKPT OUT`: a local Hugging Face BLOOM
folder to a bloomforge checkpoint and back (bloomforge.interop.hf).

In: the source folder and OUT (new or empty, or --overwrite; never a run folder). Out: the
converted folder and one line on stdout. Cheap to import: torch loads in the handlers.
"""

from __future__ import annotations

import argparse

from bloomforge.outputs import add_overwrite_flag


def register(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="local Hugging Face BLOOM folder -> bloomforge checkpoint")
    imp.add_argument("hf_dir")
    imp.add_argument("out")
    add_overwrite_flag(imp)
    imp.set_defaults(func=_run_import)
    exp = sub.add_parser(
        "export", help="bloomforge checkpoint -> Hugging Face BloomForCausalLM folder"
    )
    exp.add_argument("ckpt")
    exp.add_argument("out")
    add_overwrite_flag(exp)
    exp.set_defaults(func=_run_export)


def _run_import(args: argparse.Namespace) -> int:
    from bloomforge.interop import import_hf
    from bloomforge.outputs import claim_output

    with claim_output(args.out, inputs=[args.hf_dir], overwrite=args.overwrite):
        out = import_hf(args.hf_dir, args.out)
    print(f"imported {args.hf_dir} -> {out}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from bloomforge.interop import export_hf
    from bloomforge.outputs import claim_output

    with claim_output(args.out, inputs=[args.ckpt], overwrite=args.overwrite):
        out = export_hf(args.ckpt, args.out)
    print(f"exported {args.ckpt} -> {out} (loads with BloomForCausalLM.from_pretrained)")
    return 0
