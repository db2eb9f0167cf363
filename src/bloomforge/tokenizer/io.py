"""The one tokenizer loader, and a byte-level tokenizer that needs no training.

In: a path to `tokenizer.json` or a folder with one. Out: `tokenizers.Tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from bloomforge.errors import BloomforgeError

# BLOOM's special tokens and their ids (bigscience/tokenizer): <unk>=0, <s>=1, </s>=2, <pad>=3.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def find_tokenizer_file(path: str | Path) -> Path | None:
    """`path` itself if it is a file, `path/tokenizer.json` if that exists, else None."""
    p = Path(path)
    if p.is_file():
        return p
    candidate = p / "tokenizer.json"
    return candidate if candidate.is_file() else None


def load_tokenizer(path: str | Path) -> Tokenizer:
    file = find_tokenizer_file(path)
    if file is None:
        raise BloomforgeError(f"{path}: no tokenizer.json found")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise BloomforgeError(f"{file}: not a valid tokenizer.json ({e})") from e


def byte_level_tokenizer() -> Tokenizer:
    """BLOOM's special tokens at ids 0-3, then the 256 bytes; lossless, no merges.

    Useful where a trained tokenizer is not available yet (tests, a first demo).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok
