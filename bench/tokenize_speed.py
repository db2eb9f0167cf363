"""MB/s of `bloomforge data tokenize` end to end vs `tokenizers`' own `Tokenizer.encode_batch`.

bloomforge: read the inputs, encode, append EOS, write datatrove shards, index, manifest (the
library function behind the CLI, in this process). Reference: `encode_batch` over the same
documents already in memory (no reading, no writing), on the same cores (Rayon's default pool).
The two alternate for several rounds (order flipped each round); medians and the ratio
bloomforge / encode_batch are printed. Goal: ratio >= 0.8.

    python bench/tokenize_speed.py                  # corpus/*.txt, BPE 32k trained here
    python bench/tokenize_speed.py --tokenizer tok/ --input more.jsonl.gz --workers 2 --rounds 7
"""

from __future__ import annotations

import argparse
import glob
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bloomforge.data.tokenize import _cpu_count, tokenize_corpus
from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents
from bloomforge.tokenizer.io import SPECIAL_TOKENS, load_tokenizer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tokenizer", help="tokenizer.json or folder (default: train a 32k BPE)")
    p.add_argument("--input", nargs="+", default=[], help="more inputs ([LANG=]PATH)")
    p.add_argument("--no-corpus", action="store_true", help=f"skip {CORPUS}/*.txt")
    p.add_argument("--workers", type=int, default=None, help="default: CPU cores")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--vocab", type=int, default=32000, help="vocab of the BPE trained here")
    return p.parse_args()


def train_bpe(files: list[str], vocab: int, out: Path) -> Path:
    """Byte-level BPE like BLOOM's (special tokens at 0-3), trained with `tokenizers`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    tok.save(str(out))
    return out


def main() -> None:
    args = parse()
    inputs = list(args.input)
    if not args.no_corpus:
        inputs += sorted(glob.glob(str(CORPUS / "*.txt")))
    if not inputs:
        raise SystemExit("no inputs: pass --input or keep the corpus")
    workers = args.workers or _cpu_count()
    work = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    try:
        if args.tokenizer:
            tok_path = Path(args.tokenizer)
        else:
            plain = [str(s.path) for s in parse_inputs(inputs) if s.path.suffix == ".txt"]
            t = time.perf_counter()
            tok_path = train_bpe(plain, args.vocab, work / "tokenizer.json")
            print(f"trained byte-level BPE {args.vocab} in {time.perf_counter() - t:.1f} s")
        tok = load_tokenizer(tok_path)
        texts = [d.text for d in read_documents(parse_inputs(inputs), ReadStats())]
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        print(
            f"{len(texts):,} documents, {mb:.2f} MB, vocab {tok.get_vocab_size():,}, "
            f"{workers} workers, {_cpu_count()} cores"
        )

        def reference() -> float:
            t = time.perf_counter()
            tok.encode_batch(texts, add_special_tokens=False)
            return time.perf_counter() - t

        def ours() -> float:
            t = time.perf_counter()
            tokenize_corpus(tok_path, inputs, work / "tokens", workers=workers)
            return time.perf_counter() - t

        reference(), ours()  # warm-up: imports, page cache, Rayon pool
        times: dict[str, list[float]] = {"encode_batch": [], "bloomforge": []}
        for r in range(args.rounds):
            order = [("encode_batch", reference), ("bloomforge", ours)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                times[name].append(fn())
            print(
                f"round {r + 1}: encode_batch {mb / times['encode_batch'][-1]:.2f} MB/s, "
                f"bloomforge {mb / times['bloomforge'][-1]:.2f} MB/s",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["encode_batch"] / med["bloomforge"]
        print(
            f"\nmedian encode_batch {mb / med['encode_batch']:.2f} MB/s, "
            f"bloomforge {mb / med['bloomforge']:.2f} MB/s, ratio {ratio:.2f} (goal >= 0.8)\n"
        )
        print("| what | median s | MB/s |")
        print("|---|---|---|")
        print(
            f"| tokenizers encode_batch (in memory) | {med['encode_batch']:.3f} "
            f"| {mb / med['encode_batch']:.2f} |"
        )
        print(
            f"| bloomforge data tokenize (read+encode+write) | {med['bloomforge']:.3f} "
            f"| {mb / med['bloomforge']:.2f} |"
        )
        print(f"| ratio bloomforge / encode_batch | | {ratio:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
