"""GPU training speed sweep: BLOOM shapes x micro-batches, bloomforge vs transformers' BLOOM.

For each shape, each side is first run alone at every micro-batch (out-of-memory counts as
"does not fit") to find its best micro-batch; then both run at their best micro-batch in
alternating rounds in one process (bench/train_step.py's `measure`), with tokens/s, model
TFLOP/s, MFU against the datasheet peak and against a bf16 matmul measured on the device, peak
memory and the ratio. The last thing printed is one table.

    python bench/gpu_train.py              # H100: bloom-560m and bloom-1b1, seq 2048, bf16
    python bench/gpu_train.py --device cpu --shapes micro,tiny --seq-len 256 --micro-batches 1,2,4
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

from train_step import METRIC_HEADER, measure, metric_cells  # same folder: bench/

BASE = {
    "accum": 1,
    "attn_impl": "flex",
    "compile": True,
    "activation_checkpointing": False,
    "hf_attn": "eager",
    "precision": "bf16",
    "warmup": 3,
}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--shapes", default="bloom-560m,bloom-1b1")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--micro-batches", default="1,2,4,8,16")
    p.add_argument("--attn-impl", default=None, help="default: flex on GPU, sdpa on CPU")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--precision", default=None, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", help="write all results here")
    return p.parse_args()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run(cli: argparse.Namespace, shape: str, mb: int, sides: str, rounds: int, steps: int):
    on_gpu = cli.device.startswith("cuda")
    args = argparse.Namespace(
        **{
            **BASE,
            "attn_impl": cli.attn_impl or ("flex" if on_gpu else "sdpa"),
            "compile": on_gpu and not cli.no_compile,
            "precision": cli.precision or ("bf16" if on_gpu else "fp32"),
            "warmup": 3 if on_gpu else 1,
        },
        device=cli.device,
        preset=shape,
        seq_len=cli.seq_len,
        micro_batch=mb,
        sides=sides,
        rounds=rounds,
        steps=steps,
    )
    try:
        return measure(args)
    except torch.OutOfMemoryError:
        return None
    finally:
        _free()


def main() -> None:
    cli = parse()
    mbs = [int(x) for x in cli.micro_batches.split(",")]
    results = []
    for shape in cli.shapes.split(","):
        best: dict[str, tuple[int, float]] = {}
        for side in ("bloomforge", "transformers"):
            for mb in mbs:
                r = _run(cli, shape, mb, side, rounds=1, steps=max(2, cli.steps // 2))
                tps = r["rows"][0]["tokens_per_s"] if r else None
                print(f"{shape} {side} micro-batch {mb}: " + (f"{tps:,.0f} tok/s" if r else "OOM"))
                if r is None:
                    break
                if side not in best or tps > best[side][1]:
                    best[side] = (mb, tps)
        # Both sides in one run, alternating, at bloomforge's best micro-batch; then the
        # transformers side again at its own best if that differs.
        for side in ("bloomforge", "transformers"):
            if side not in best:
                continue
            mb = best[side][0]
            sides = "bloomforge,transformers" if side == "bloomforge" else "transformers"
            if side == "transformers" and mb == best.get("bloomforge", (None,))[0]:
                continue
            r = _run(cli, shape, mb, sides, cli.rounds, cli.steps)
            if r is None and sides != side:  # transformers does not fit there: ours alone
                r = _run(cli, shape, mb, side, cli.rounds, cli.steps)
            if r is not None:
                for row in r["rows"]:
                    results.append({"shape": shape, "micro_batch": mb, **row, "setup": r["setup"]})
    if cli.json:
        Path(cli.json).write_text(json.dumps(results, indent=2))
    print()
    print(f"{'shape':<12} {'side':<13} {'mb':>3} {'tok/s':>10} {METRIC_HEADER}")
    for r in results:
        print(
            f"{r['shape']:<12} {r['side']:<13} {r['micro_batch']:>3} {r['tokens_per_s']:>10,.0f} "
            f"{metric_cells(r)}"
        )
    for shape in cli.shapes.split(","):
        by_side = {}
        for r in results:
            if r["shape"] == shape:
                by_side[r["side"]] = max(by_side.get(r["side"], 0.0), r["tokens_per_s"])
        if len(by_side) == 2:
            ratio = by_side["bloomforge"] / by_side["transformers"]
            print(f"{shape}: bloomforge / transformers (each at its best micro-batch) {ratio:.2f}x")


if __name__ == "__main__":
    main()
