"""Tokenizers: loading, BLOOM-style training with α-sampling over languages, fertility tables.

In: a `tokenizer.json` file or a folder holding one; text per language to train or evaluate on.
Out: an HF `tokenizers.Tokenizer`; a trained tokenizer folder (`tokenizer.json`, `sampling.json`);
fertility tables (tokens per word per language) against reference tokenizers.
"""

from bloomforge.tokenizer.fertility import (
    count_tokens,
    fertility_table,
    format_fertility,
    load_eval_texts,
    monolingual_baselines,
)
from bloomforge.tokenizer.io import (
    SPECIAL_TOKENS,
    byte_level_tokenizer,
    find_tokenizer_file,
    load_tokenizer,
)
from bloomforge.tokenizer.sampling import SamplingPlan, count_languages, plan_sampling
from bloomforge.tokenizer.train import (
    bloom_style_tokenizer,
    save_trained,
    train_on_texts,
    train_tokenizer,
)

__all__ = [
    "SPECIAL_TOKENS",
    "SamplingPlan",
    "bloom_style_tokenizer",
    "byte_level_tokenizer",
    "count_languages",
    "count_tokens",
    "fertility_table",
    "find_tokenizer_file",
    "format_fertility",
    "load_eval_texts",
    "load_tokenizer",
    "monolingual_baselines",
    "plan_sampling",
    "save_trained",
    "train_on_texts",
    "train_tokenizer",
]
