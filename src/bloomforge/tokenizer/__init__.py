"""Tokenizers: loading (here) and, with the tokenizer issue, training and fertility.

In: a `tokenizer.json` file or a folder holding one. Out: an HF `tokenizers.Tokenizer`.
"""

from bloomforge.tokenizer.io import (
    SPECIAL_TOKENS,
    byte_level_tokenizer,
    find_tokenizer_file,
    load_tokenizer,
)

__all__ = ["SPECIAL_TOKENS", "byte_level_tokenizer", "find_tokenizer_file", "load_tokenizer"]
