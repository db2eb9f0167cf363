"""Multitask finetuning vs pretraining on the same model: tokens/s and packing efficiency.

Prompted data from the shared sets (`bloomforge mtf build`: XQuAD in 12 languages, Tatoeba in
the languages given, HellaSwag; capped per dataset and language), tokenized by a BPE tokenizer
trained here on the shared corpus and XQuAD contexts (`bloomforge tokenizer train`, 16k); the
same micro/tiny model (one `bloomforge model init` checkpoint, `init=` on both sides) trained by
`Trainer.train_step()` on (a) pretraining rows from UD text and (b) packed xP3 rows
(bloomforge.mtf.loader), alternating in rounds in one process. Reported: step tokens/s (rows x
seq_len) of each, finetuning's real (non-padding) tokens/s, the share of real tokens in packed
rows (goal >= 95%) with Megatron's greedy packing (the default, as BLOOMZ) and with
`data.packing=best_fit`, against one sample per padded row (what packing saves), and samples
skipped as longer than a row.

    python bench/finetune.py                      # CPU: tiny preset, seq 2048
    python bench/finetune.py --device cuda --preset bloom-560m --seq-len 2048 --precision bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bloomforge.cli import main as cli
from bloomforge.mtf.loader import MTFLoader
from bloomforge.recipe import load_recipe
from bloomforge.tokenizer import load_tokenizer
from bloomforge.training.loop import Trainer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=16000, help="BPE vocabulary trained here")
    p.add_argument("--batch", type=int, default=8, help="rows per step (one micro-batch)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2, help="timed steps per side per round")
    p.add_argument("--cap", type=int, default=400, help="records per dataset x language")
    p.add_argument("--tatoeba", default="fra,spa,deu,ara,hin,vie,cmn,ind,swh")
    return p.parse_args()


def bpe(root: Path, vocab: int) -> Path:
    """A byte-level BPE tokenizer trained on the UD corpus and XQuAD's contexts."""
    inputs = [str(p) for p in sorted((SHARED / "corpus").glob("*.txt"))]
    inputs += [str(SHARED / "corpus" / "xquad_contexts")]
    argv = ["tokenizer", "train", "--input", *inputs, "--vocab-size", str(vocab)]
    assert cli([*argv, "--out", str(root / "tok")]) == 0
    return root / "tok" / "tokenizer.json"


def token_folder(out: Path, tok_file: Path) -> None:
    """UD text of 4 languages (the layout of `bloomforge data tokenize`)."""
    import json

    tok = load_tokenizer(tok_file)
    eos = tok.token_to_id("</s>")
    out.mkdir(parents=True)
    tok.save(str(out / "tokenizer.json"))
    shards = []
    for lang in ("en", "fr", "es", "vi"):
        lines = (SHARED / "corpus" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        docs = [" ".join(lines[i : i + 8]) for i in range(0, min(len(lines), 4000), 8)]
        ids = [[*e.ids, eos] for e in tok.encode_batch(docs, add_special_tokens=False)]
        (out / lang).mkdir()
        flat = np.array([t for d in ids for t in d], dtype="<u2")  # vocab < 65536
        flat.tofile(out / lang / "00000.ds")
        np.cumsum([len(d) for d in ids]).astype("<u8").tofile(out / lang / "00000.ds.index")
        shards.append({"file": f"{lang}/00000.ds", "source": "ud", "language": lang,
                       "tokens": int(flat.size), "documents": len(ids)})  # fmt: skip
    manifest = {"format": "datatrove-ds", "version": 1, "token_size": 2, "dtype": "uint16",
                "vocab_size": tok.get_vocab_size(), "eos_id": eos, "tokenizer": "tokenizer.json",
                "shards": shards, "sources": {}}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))


def xp3(root: Path, cap: int, tatoeba: list[str]) -> Path:
    import shutil

    tat = root / "tatoeba"
    tat.mkdir()
    for code in tatoeba:
        for side in (code, "eng"):
            shutil.copy(SHARED / "corpus" / "tatoeba" / f"tatoeba.{code}-eng.{side}", tat)
    out = root / "xp3"
    argv = ["mtf", "build", "--templates", str(SHARED / "mtf" / "promptsource")]
    argv += ["--task", f"tatoeba={tat}", "--task", f"xquad={SHARED / 'mtf' / 'xquad'}"]
    argv += ["--task", f"hellaswag={SHARED / 'eval' / 'hellaswag'}"]
    argv += ["--max-per-dataset", str(cap), "--out", str(out)]
    assert cli(argv) == 0
    return out


def trainer(args, init: Path, tok_file: Path, out: Path, data: dict) -> Trainer:
    overrides = {
        "init": init,
        "tokenizer.path": tok_file,
        "data.seq_len": args.seq_len,
        "train.global_batch_size": args.batch,
        "train.micro_batch_size": args.batch,
        "train.precision": args.precision,
        "train.device": args.device,
        "train.lr": 1e-4,
        "train.min_lr": 1e-4,
        "train.schedule": "constant",
        "train.warmup_tokens": 0,
        "train.max_tokens": 10**12,
        "train.decay_tokens": 10**12,
        "train.save_every": 0,
        "out": out,
        **data,
    }
    return Trainer(load_recipe(None, [f"{k}={v}" for k, v in overrides.items()]))


def timed(t: Trainer, steps: int) -> list[tuple[float, float | None]]:
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        m = t.train_step()
        if t.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        out.append((time.perf_counter() - start, m.get("packing")))
    return out


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok_file = bpe(root, args.vocab)
        token_folder(root / "tokens", tok_file)
        ck = root / "init"
        vocab = load_tokenizer(tok_file).get_vocab_size()
        assert cli(["model", "init", args.preset, str(ck), f"vocab_size={vocab}",
                    f"max_seq_len={args.seq_len}"]) == 0  # fmt: skip
        data = xp3(root, args.cap, args.tatoeba.split(","))
        pre = trainer(args, ck, tok_file, root / "pre", {"data.tokens": root / "tokens"})
        ft = trainer(args, ck, tok_file, root / "ft", {"data.mtf": data})
        loader = ft.loader
        rows = loader.next_batch(400)  # what packing fills (a copy: state restored below)
        loader.load_state_dict({**loader.state_dict(), "consumed_samples": 0,
                                "group_counts": dict.fromkeys(loader.groups, 0)})  # fmt: skip
        packed_share = rows.real_tokens / rows.tokens.numel()
        best = MTFLoader(data, load_tokenizer(tok_file), args.seq_len, seed=ft.recipe.seed,
                         packing="best_fit").next_batch(400)  # fmt: skip
        best_share = best.real_tokens / best.tokens.numel()
        sizes = np.concatenate([loader._train[g].sizes() for g in loader.groups])
        fits = sizes[sizes <= args.seq_len + 1]
        unpacked_share = float(fits.sum()) / (len(fits) * (args.seq_len + 1))
        too_long = sum(loader.too_long().values())
        for t in (pre, ft):
            timed(t, 1)  # warm-up
        times: dict[str, list[float]] = {"pretrain": [], "finetune": []}
        shares: list[float] = []
        for _ in range(args.rounds):
            times["pretrain"] += [s for s, _ in timed(pre, args.steps)]
            got = timed(ft, args.steps)
            times["finetune"] += [s for s, _ in got]
            shares += [p for _, p in got]
    step_tokens = args.batch * args.seq_len
    tps = {k: step_tokens / statistics.median(v) for k, v in times.items()}
    real = tps["finetune"] * statistics.mean(shares)
    print(f"model {args.preset}, seq {args.seq_len}, {args.batch} rows/step, {args.device}, "
          f"{args.precision}; {len(sizes):,} training samples in {len(loader.groups)} languages, "
          f"median of {args.rounds * args.steps} steps per side")  # fmt: skip
    print()
    print("| measure | pretraining | finetuning (packed xP3) | ratio ft/pt |")
    print("|---|---|---|---|")
    print(f"| step tokens/s (rows x seq_len) | {tps['pretrain']:,.0f} | {tps['finetune']:,.0f} | "
          f"{tps['finetune'] / tps['pretrain']:.2f} |")  # fmt: skip
    print(f"| real tokens/s (no padding) | {tps['pretrain']:,.0f} | {real:,.0f} | "
          f"{real / tps['pretrain']:.2f} |")  # fmt: skip
    print(f"| real-token share of rows, data.packing=megatron (default) | 1.000 | "
          f"{packed_share:.3f} | |")  # fmt: skip
    print(f"| real-token share of rows, data.packing=best_fit | 1.000 | {best_share:.3f} | |")
    print(f"| real-token share, one sample per padded row (no packing) | 1.000 | "
          f"{unpacked_share:.3f} | |")  # fmt: skip
    print(f"| real tokens/s with best_fit (same step cost x its share) | {tps['pretrain']:,.0f} | "
          f"{tps['finetune'] * best_share:,.0f} | "
          f"{tps['finetune'] * best_share / tps['pretrain']:.2f} |")  # fmt: skip
    print(f"| samples longer than a row (skipped) | | {too_long} | |")


if __name__ == "__main__":
    sys.exit(main())
