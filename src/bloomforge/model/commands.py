"""`bloomforge model info | init` and `bloomforge generate`: presets and shapes, a randomly
initialised checkpoint, text continuation with the KV cache.

In: a preset name or recipe and `key=value` model overrides; a checkpoint and prompts. Out: a
description (text or json), a checkpoint folder, continuations on stdout. Cheap to import: torch
loads in the handlers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bloomforge.errors import BloomforgeError
from bloomforge.outputs import add_overwrite_flag


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="inspect or create models (presets, shapes, FLOPs)")
    msub = model.add_subparsers(title="model commands", metavar="ACTION")
    info = msub.add_parser("info", help="parameters, FLOPs/token and shapes of a preset")
    info.add_argument("name", help="preset name (tiny, bloom-560m, ..., bloom-176b) or recipe.yaml")
    info.add_argument("overrides", nargs="*", help="key=value overrides of the model section")
    info.add_argument(
        "--seq-len", type=int, help="sequence length for FLOPs (default: max_seq_len)"
    )
    info.add_argument("--json", action="store_true", help="print machine-readable json")
    info.set_defaults(func=_run_model_info)
    init = msub.add_parser("init", help="write a randomly initialised checkpoint of a preset")
    init.add_argument("name", help="preset name or recipe.yaml")
    init.add_argument("out", help="checkpoint folder to write")
    init.add_argument("overrides", nargs="*", help="key=value overrides of the model section")
    init.add_argument(
        "--tokenizer",
        default="bytes",
        help="tokenizer.json or folder; 'bytes' (default) = byte-level",
    )
    init.add_argument("--seed", type=int, default=1234)
    add_overwrite_flag(init)
    init.set_defaults(func=_run_model_init)

    gen = sub.add_parser("generate", help="continue prompts with a checkpoint (KV cache)")
    gen.add_argument("ckpt")
    gen.add_argument("--prompt", action="append", required=True, help="repeat for a batch")
    gen.add_argument(
        "--max-new-tokens",
        type=int,
        help="new tokens per prompt (default: 20, or what fits); at most the length limit "
        "minus the longest prompt",
    )
    gen.add_argument(
        "--max-length",
        type=int,
        help="length limit, prompt + new tokens (default: the model's max_seq_len); larger "
        "values ask ALiBi to extrapolate past the training length",
    )
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto")
    gen.add_argument(
        "--json",
        action="store_true",
        help="print prompts and continuations as json at the end (default: stream text)",
    )
    gen.set_defaults(func=_run_generate)


def _model_config(name: str, overrides: Sequence[str]):
    from bloomforge.recipe import load_recipe

    # Overrides name model fields with or without the section: `n_layer=2` or `model.n_layer=2`.
    scoped = [o if o.startswith("model.") else f"model.{o}" for o in overrides]
    if name.endswith((".yaml", ".yml")):
        return load_recipe(name, scoped).model
    return load_recipe(None, [f"model={name}", *scoped]).model


def _run_model_info(args: argparse.Namespace) -> int:
    from bloomforge.model.info import describe, format_description

    cfg = _model_config(args.name, args.overrides)
    info = describe(cfg, args.seq_len or cfg.max_seq_len)
    print(json.dumps(info, indent=2) if args.json else format_description(info))
    return 0


def _run_model_init(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from bloomforge.checkpoint import save_checkpoint
    from bloomforge.model import BloomLM
    from bloomforge.outputs import claim_output
    from bloomforge.recipe import Recipe
    from bloomforge.tokenizer import byte_level_tokenizer, find_tokenizer_file, load_tokenizer

    cfg = _model_config(args.name, args.overrides)
    recipe = args.name if args.name.endswith((".yaml", ".yml")) else None
    tok_input = None if args.tokenizer == "bytes" else args.tokenizer
    with (
        claim_output(args.out, inputs=[recipe, tok_input], overwrite=args.overwrite),
        tempfile.TemporaryDirectory() as tmp,
    ):
        if args.tokenizer == "bytes":
            tokenizer, tok_file = byte_level_tokenizer(), Path(tmp) / "tokenizer.json"
            tokenizer.save(str(tok_file))  # files: scratch, a TemporaryDirectory
        else:
            tokenizer, tok_file = (
                load_tokenizer(args.tokenizer),
                find_tokenizer_file(args.tokenizer),
            )
        n_tok = tokenizer.get_vocab_size()
        if n_tok > cfg.padded_vocab_size:
            raise BloomforgeError(
                f"tokenizer has {n_tok} tokens, model.vocab_size is {cfg.vocab_size}"
            )
        model = BloomLM.build(cfg, seed=args.seed)
        save_checkpoint(args.out, model, Recipe(model=cfg, seed=args.seed), tok_file)
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.devices import resolve_device
    from bloomforge.model.config import check_vocab
    from bloomforge.model.generate import (
        GenerationLengthError,
        Sampling,
        generate_text,
        length_limit,
        print_streamed,
    )

    device = resolve_device(args.device, "--device")
    try:
        sampling = Sampling(
            max_new_tokens=20 if args.max_new_tokens is None else args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
            stop=args.stop,
            max_length=args.max_length,
        )
    except ValueError as e:
        raise BloomforgeError(str(e)) from e
    ckpt = load_checkpoint(args.ckpt, device=device)
    ckpt.model.eval()
    tokenizer = ckpt.tokenizer()
    check_vocab(tokenizer, ckpt.model.cfg, ckpt.tokenizer_file or "tokenizer")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        if args.max_new_tokens is None:  # the default shrinks to what fits after the prompt
            width = max(len(tokenizer.encode(p, add_special_tokens=False)) for p in args.prompt)
            room = length_limit(ckpt.model.cfg, args.max_length) - width
            sampling.max_new_tokens = max(1, min(sampling.max_new_tokens, room))
        on_text = None if args.json else print_streamed(args.prompt, write)
        texts = generate_text(ckpt.model, tokenizer, args.prompt, sampling, device, on_text)
    except GenerationLengthError as e:
        raise BloomforgeError(e.describe("--max-new-tokens", "--max-length", "--prompt")) from e
    except KeyboardInterrupt:
        write("\n")  # end the streamed line; main reports the interrupt
        raise
    if args.json:
        print(
            json.dumps(
                [{"prompt": p, "continuation": t} for p, t in zip(args.prompt, texts, strict=True)]
            )
        )
    return 0
