"""Training tokens/s: `bloomforge train`'s step vs a plain loop over transformers' BloomForCausalLM.

Both sides get the same model shape, the same batches (two mixture loaders with one seed over one
token folder), the same micro-batching and gradient accumulation, AdamW with the same settings,
gradient clipping and the same precision (fp32 master weights, bf16 autocast when asked). The
bloomforge side is `Trainer.train_step()` itself (loader, lr schedule, accumulation, clipping,
skip guard, optimizer); the transformers side is the loop a user writes: logits, F.cross_entropy,
backward, clip, AdamW (fused on GPU). They run in alternating rounds in one process; the table
reports medians, the ratio bloomforge / transformers, model TFLOP/s and MFU (model FLOPs from
bloomforge.model.flops against the datasheet peak and against a bf16 matmul measured here).

    python bench/train_step.py                                   # CPU, tiny preset, fp32
    python bench/train_step.py --device cuda --preset bloom-560m --seq-len 2048 \\
        --micro-batch 4 --precision bf16 [--attn-impl flex --compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models

from bloomforge.data.loader import MixtureLoader
from bloomforge.model.config import ModelConfig
from bloomforge.model.flops import train_flops_per_token
from bloomforge.recipe import load_recipe
from bloomforge.tokenizer import SPECIAL_TOKENS
from bloomforge.training.loop import Trainer, prepare_recipe
from bloomforge.training.metrics import device_peak_tflops


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--accum", type=int, default=2, help="micro-batches per step")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--attn-impl", default="sdpa", choices=["sdpa", "flex", "reference"])
    p.add_argument("--compile", action="store_true", help="torch.compile bloomforge's blocks")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--hf-attn", default="eager", help="transformers attn_implementation")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sides", default="bloomforge,transformers", help="which to measure")
    p.add_argument("--json", help="write the results here")
    return p.parse_args()


def synthetic_tokens(folder: Path, vocab: int, n_tokens: int, seed: int = 0) -> None:
    """A token folder of random ids (throughput does not depend on the text) and a WordLevel
    tokenizer with exactly `vocab` entries, so the model keeps the preset's vocabulary."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = list(SPECIAL_TOKENS) + [f"t{i}" for i in range(len(SPECIAL_TOKENS), vocab)]
    tok = Tokenizer(models.WordLevel({n: i for i, n in enumerate(names)}, unk_token="<unk>"))
    tok.save(str(folder / "tokenizer.json"))
    size = 2 if vocab <= 65536 else 4
    docs = 64
    ids = rng.integers(4, vocab, size=n_tokens).astype("<u2" if size == 2 else "<u4")
    ends = np.linspace(0, n_tokens, docs + 1, dtype=np.int64)[1:]
    ids[ends - 1] = 2  # EOS closes each document
    (folder / "bench").mkdir()
    ids.tofile(folder / "bench" / "00000.ds")
    ends.astype("<u8").tofile(folder / "bench" / "00000.ds.index")
    manifest = {
        "format": "datatrove-ds",
        "version": 1,
        "token_size": size,
        "vocab_size": vocab,
        "eos_id": 2,
        "dtype": "uint16" if size == 2 else "uint32",
        "tokenizer": "tokenizer.json",
        "sources": {},
        "shards": [
            {
                "file": "bench/00000.ds",
                "source": "bench",
                "language": "und",
                "tokens": n_tokens,
                "documents": docs,
            }
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


class HFLoop:
    """What a transformers user writes: BloomForCausalLM, F.cross_entropy, AdamW, clipping."""

    def __init__(self, cfg: ModelConfig, args, loader: MixtureLoader, device: torch.device):
        from transformers import BloomConfig, BloomForCausalLM

        hf_cfg = BloomConfig(
            vocab_size=cfg.padded_vocab_size,
            hidden_size=cfg.hidden,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            attn_implementation=args.hf_attn,
        )
        torch.manual_seed(0)
        self.model = BloomForCausalLM(hf_cfg).to(device).train()
        on_gpu = device.type == "cuda"
        self.opt = torch.optim.AdamW(
            self.model.parameters(),
            lr=1e-4,
            betas=(0.9, 0.95),
            eps=1e-8,
            weight_decay=0.1,
            fused=on_gpu or None,
        )
        self.loader, self.device, self.args = loader, device, args

    def train_step(self) -> float:
        a = self.args
        batch = self.loader.next_batch(a.micro_batch * a.accum)
        total = torch.zeros((), device=self.device)
        for micro in batch.split(a.micro_batch):
            micro = micro.to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=a.precision == "bf16"):
                logits = self.model(input_ids=micro[:, :-1]).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), micro[:, 1:].flatten())
            (loss / a.accum).backward()
            total += loss.detach() / a.accum
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total.item()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measured_matmul_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12


def allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def measure(args: argparse.Namespace) -> dict:
    """Build both sides, time them in alternating rounds; rows per side, the ratio, the setup."""
    device = torch.device(args.device)
    cfg = ModelConfig.from_name(args.preset)
    batch = args.micro_batch * args.accum
    tmp = Path(tempfile.mkdtemp(prefix="bf-bench-"))
    synthetic_tokens(tmp / "tokens", cfg.vocab_size, n_tokens=max(2_000_000, 40 * batch * 2049))
    recipe = load_recipe(
        None,
        [
            f"model={args.preset}",
            f"model.attn_impl={args.attn_impl}",
            f"data.tokens={tmp / 'tokens'}",
            f"data.seq_len={args.seq_len}",
            f"train.global_batch_size={batch}",
            f"train.micro_batch_size={args.micro_batch}",
            f"train.precision={args.precision}",
            f"train.device={args.device}",
            f"train.compile={args.compile}",
            f"train.activation_checkpointing={args.activation_checkpointing}",
            "train.lr=1e-4",
            "train.warmup_tokens=0",
            "train.max_tokens=1e12",
            "train.decay_tokens=1e12",
            "train.save_every=0",
            f"out={tmp / 'run'}",
        ],
    )
    wanted = getattr(args, "sides", "bloomforge,transformers").split(",")
    model_cfg = prepare_recipe(recipe).model
    base = allocated(device)
    sides, static = {}, {}
    for name in ("bloomforge", "transformers"):
        if name not in wanted:
            continue
        before = allocated(device)  # static = weights + optimizer state this side keeps
        if name == "bloomforge":
            step = Trainer(recipe).train_step
        else:
            loader = MixtureLoader(tmp / "tokens", args.seq_len, seed=1234)
            step = HFLoop(model_cfg, args, loader, device).train_step
        for _ in range(args.warmup):
            step()
        sync(device)
        sides[name], static[name] = step, allocated(device) - before
    tps: dict[str, list[float]] = {name: [] for name in sides}
    peak: dict[str, float] = {name: 0.0 for name in sides}
    other_static = {n: sum(v for k, v in static.items() if k != n) for n in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            t = time.perf_counter()
            for _ in range(args.steps):
                sides[name]()
            sync(device)
            tps[name].append(args.steps * batch * args.seq_len / (time.perf_counter() - t))
            if device.type == "cuda":
                own = torch.cuda.max_memory_allocated(device) - base - other_static[name]
                peak[name] = max(peak[name], own / 2**30)

    flops = train_flops_per_token(model_cfg, args.seq_len)
    datasheet = device_peak_tflops(device)
    matmul = measured_matmul_tflops(device)
    rows = []
    for name, values in tps.items():
        med = statistics.median(values)
        tflops = med * flops / 1e12
        rows.append(
            {
                "side": name,
                "tokens_per_s": med,
                "min": min(values),
                "max": max(values),
                "tflops": tflops,
                "mfu_datasheet": tflops / datasheet if datasheet else None,
                "mfu_measured_matmul": tflops / matmul if matmul else None,
                "peak_memory_gib": peak[name] if device.type == "cuda" else None,
            }
        )
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"] if len(rows) == 2 else None
    setup = (
        f"{args.preset} ({model_cfg.n_layer}x{model_cfg.hidden}, vocab "
        f"{model_cfg.padded_vocab_size}) seq {args.seq_len} micro {args.micro_batch} x "
        f"accum {args.accum} {args.precision} on {device}"
        + (f" [{torch.cuda.get_device_name(device)}]" if device.type == "cuda" else "")
        + f"; bloomforge attn={args.attn_impl} compile={args.compile}; hf attn={args.hf_attn}"
    )
    return {
        "setup": setup,
        "rows": rows,
        "ratio": ratio,
        "datasheet": datasheet,
        "matmul_tflops": matmul,
    }


METRIC_HEADER = f"{'TFLOP/s':>8} {'MFU sheet':>9} {'MFU mm':>7} {'mem GiB':>8}"


def metric_cells(row: dict) -> str:
    """TFLOP/s, MFU (datasheet, measured matmul) and peak memory of one result row."""

    def pct(x: float | None) -> str:
        return f"{100 * x:.1f}%" if x is not None else "-"

    mem = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "-"
    return (
        f"{row['tflops']:>8.2f} {pct(row['mfu_datasheet']):>9} "
        f"{pct(row['mfu_measured_matmul']):>7} {mem:>8}"
    )


def print_table(result: dict) -> None:
    rows, matmul, datasheet = result["rows"], result["matmul_tflops"], result["datasheet"]
    print(result["setup"])
    if matmul:
        print(f"bf16 matmul measured here: {matmul:.0f} TFLOP/s; datasheet {datasheet} TFLOP/s")
    print(f"{'side':<13} {'tok/s (median)':>15} {'min':>10} {'max':>10} {METRIC_HEADER}")
    for row in rows:
        print(
            f"{row['side']:<13} {row['tokens_per_s']:>15,.0f} {row['min']:>10,.0f} "
            f"{row['max']:>10,.0f} {metric_cells(row)}"
        )
    if result["ratio"] is not None:
        print(f"ratio bloomforge / transformers: {result['ratio']:.2f}x")


def main() -> None:
    args = parse()
    result = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
