"""Forward + backward tokens/s: bloomforge's BLOOM vs transformers' BloomForCausalLM.

Same config, same weights, same batch, same process; the two run in alternating rounds (the
order flips every round) and the table reports medians and the ratio bloomforge / transformers.

    python bench/model_step.py                                  # CPU float32, 4 x 256, seq 512
    python bench/model_step.py --unfused-loss                   # bloomforge without chunked loss
    python bench/model_step.py --device cuda --dtype bfloat16 --seq 2048 --layers 24 --hidden 1024
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import BloomConfig, BloomForCausalLM

from bloomforge.checkpoint import load_state
from bloomforge.interop.hf import hf_config_to_model, hf_to_bloomforge
from bloomforge.model import BloomLM
from bloomforge.model.loss import fused_linear_cross_entropy, next_token_targets


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--attn-impl", default="sdpa", choices=["sdpa", "flex", "reference"])
    p.add_argument(
        "--unfused-loss",
        action="store_true",
        help="bloomforge computes full logits + F.cross_entropy instead of its chunked loss",
    )
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    args = parse()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    hf_cfg = BloomConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, n_layer=args.layers, n_head=args.heads
    )
    hf = BloomForCausalLM(hf_cfg).to(device=device, dtype=dtype).train()
    cfg = hf_config_to_model(hf_cfg.to_dict(), "bench")
    cfg.attn_impl = args.attn_impl
    with torch.device("meta"):
        ours = BloomLM(cfg)
    load_state(ours, hf_to_bloomforge(hf.state_dict(), "bench"), "bench", device, dtype)
    ours.train()
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)

    def hf_step() -> None:
        hf.zero_grad(set_to_none=True)
        hf(ids, labels=ids).loss.backward()

    targets = next_token_targets(ids)  # the same shift transformers' loss makes internally

    def our_step() -> None:
        ours.zero_grad(set_to_none=True)
        hidden = ours(ids, return_hidden=True)
        if args.unfused_loss:
            logits = ours.logits(hidden).flatten(0, 1).float()
            F.cross_entropy(logits, targets.flatten()).backward()
        else:
            fused_linear_cross_entropy(hidden, ours.output_weight, targets).backward()

    steps = {"bloomforge": our_step, "transformers": hf_step}
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    sync(device)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    tokens = args.batch * args.seq * args.steps
    for r in range(args.rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            sync(device)
            rates[name].append(tokens / (time.perf_counter() - t0))
        print(
            f"round {r + 1}/{args.rounds}: "
            + "  ".join(f"{n} {rates[n][-1]:,.0f} tok/s" for n in steps)
        )

    med = {n: statistics.median(v) for n, v in rates.items()}
    ratios = [a / b for a, b in zip(rates["bloomforge"], rates["transformers"], strict=True)]
    print(
        f"\nconfig: {args.layers} layers x {args.hidden} hidden, {args.heads} heads, "
        f"vocab {args.vocab}, batch {args.batch} x seq {args.seq}, {args.dtype} on {device}, "
        f"attn {args.attn_impl}, {'unfused' if args.unfused_loss else 'chunked'} loss, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    print(f"{'model':<14} {'median tok/s':>14} {'min':>10} {'max':>10}")
    for n, v in rates.items():
        print(f"{n:<14} {med[n]:>14,.0f} {min(v):>10,.0f} {max(v):>10,.0f}")
    ratio = med["bloomforge"] / med["transformers"]
    per_round = statistics.median(ratios)
    print(f"{'ratio':<14} {ratio:>14.2f}x  (median of per-round ratios {per_round:.2f}x)")


if __name__ == "__main__":
    main()
