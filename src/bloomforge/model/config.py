"""Model shapes and architecture choices: one `ModelConfig` dataclass and the named presets.

In: a preset name (`ModelConfig.from_name("bloom-560m")`) or a mapping from a recipe's `model`
section (`preset:` plus any field to override). Out: a validated `ModelConfig` whose derived
fields (`head_dim`, `ffn_hidden`, `padded_vocab_size`, `init_std`) every other module reads.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from bloomforge.errors import BloomforgeError
from bloomforge.typed_config import bounded

Position = Literal["alibi", "none", "learned", "sinusoidal", "rotary"]
MLPKind = Literal["gelu", "swiglu", "geglu", "reglu"]
AttentionKind = Literal["causal", "prefix_lm"]
AttentionImpl = Literal["sdpa", "flex", "reference"]

# BLOOM's tokenizer has 250680 tokens; tr11 padded the embedding to 250880 with
# `--pad-vocab-size-to 250880` (train/tr11-176B-ml/tr11-176B-ml.slurm); rounding up to a multiple
# of 512 gives the same size.
BLOOM_VOCAB = 250680
BLOOM_PAD_MULTIPLE = 512


@dataclass
class ModelConfig:
    """Shape and architecture of a BLOOM-family decoder.

    Defaults are BLOOM's own choices; the ablation switches (`position`, `mlp`,
    `embedding_layernorm`, `attention`) default to what BLOOM shipped.
    """

    preset: str | None = None
    n_layer: int = 2
    hidden: int = 64
    n_head: int = 4
    vocab_size: int = 1024
    pad_vocab_multiple: int = 128
    ffn_hidden_size: int | None = bounded(
        None, ge=1
    )  # None: 4 * hidden, as BLOOM (also for the GLU variants)
    max_seq_len: int = bounded(2048, ge=1)
    position: Position = "alibi"
    mlp: MLPKind = "gelu"
    embedding_layernorm: bool = True
    attention: AttentionKind = "causal"
    attn_impl: AttentionImpl = "sdpa"
    layer_norm_eps: float = bounded(1e-5, gt=0)
    tie_embeddings: bool = True
    rotary_base: float = bounded(10000.0, gt=0)
    hidden_dropout: float = bounded(0.0, ge=0, lt=1)
    attention_dropout: float = bounded(0.0, ge=0, lt=1)
    # None: sqrt(1 / (3 * hidden)) (0.0048 at 176B's width). tr11 passed a fixed
    # --init-method-std 0.0048 to every size; the BLOOM presets set it (docs/training.md).
    init_std: float | None = bounded(None, gt=0)
    # Megatron's scaled_init_method_normal: output projections get std / sqrt(2 * n_layer).
    scale_output_init: bool = True

    def __post_init__(self) -> None:
        for name in ("n_layer", "hidden", "n_head", "vocab_size", "pad_vocab_multiple"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.n_head:
            raise ValueError(f"hidden {self.hidden} is not divisible by n_head {self.n_head}")
        if self.position == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions need an even head dim, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return self.ffn_hidden_size or 4 * self.hidden

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_multiple
        return math.ceil(self.vocab_size / m) * m

    @property
    def is_glu(self) -> bool:
        return self.mlp != "gelu"

    @property
    def std(self) -> float:
        return self.init_std if self.init_std is not None else math.sqrt(1.0 / (3.0 * self.hidden))

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(_unknown_preset(name))
        return replace(PRESETS[name], **overrides)

    @classmethod
    def resolve_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Merge a named preset under the keys given explicitly (used by the recipe loader)."""
        name = data.get("preset")
        if name is None:
            return data
        if not isinstance(name, str):
            raise ValueError(f"key 'preset': expected a preset name, got {type(name).__name__}")
        if name not in PRESETS:
            raise ValueError(f"key 'preset': {_unknown_preset(name)}")
        base = {f.name: getattr(PRESETS[name], f.name) for f in fields(cls)}
        base.update(data)
        return base


def _unknown_preset(name: str) -> str:
    import difflib

    near = difflib.get_close_matches(name, PRESETS, n=1, cutoff=0.5)
    hint = f"did you mean '{near[0]}'?" if near else "known: " + ", ".join(PRESETS)
    return f"unknown model preset '{name}' ({hint})"


def _bloom(name: str, n_layer: int, hidden: int, n_head: int) -> ModelConfig:
    # Shapes as tr11 ran them (bigscience-workshop/bigscience, train/tr11-176B-ml/*.slurm and
    # smaller_models/*.slurm: NLAYERS, NHIDDEN, NHEADS, SEQ_LEN=2048); vocab padded as released
    # (--pad-vocab-size-to 250880). Every tr11 run, whatever its width, passed
    # --init-method-std 0.0048 (sqrt(1/(3 x 14336)) rounded: the 176B value, README "std Init"),
    # not sqrt(1/(3 h)) of its own width. docs/training.md "Fidelity to tr11" cites each value.
    return ModelConfig(
        preset=name,
        n_layer=n_layer,
        hidden=hidden,
        n_head=n_head,
        vocab_size=BLOOM_VOCAB,
        pad_vocab_multiple=BLOOM_PAD_MULTIPLE,
        max_seq_len=2048,
        init_std=0.0048,
    )


PRESETS: dict[str, ModelConfig] = {
    # CPU-sized models for tests and laptops (a few M parameters with a 32k vocabulary).
    "tiny": ModelConfig(
        preset="tiny", n_layer=4, hidden=128, n_head=4, vocab_size=32000, max_seq_len=512
    ),
    # Six heads exercise BLOOM's ALiBi slopes for a head count that is not a power of two.
    "tiny-6h": ModelConfig(
        preset="tiny-6h", n_layer=4, hidden=192, n_head=6, vocab_size=32000, max_seq_len=512
    ),
    "micro": ModelConfig(
        preset="micro", n_layer=2, hidden=64, n_head=4, vocab_size=512, max_seq_len=256
    ),
    # Released name, then the tr11 run it was trained as (docs/training.md, "Fidelity to tr11").
    "bloom-560m": _bloom("bloom-560m", 24, 1024, 16),  # tr11e-350M-ml
    "bloom-1b1": _bloom("bloom-1b1", 24, 1536, 16),  # tr11d-760M-ml
    "bloom-1b7": _bloom("bloom-1b7", 24, 2048, 16),  # tr11b-1B3-ml
    "bloom-3b": _bloom("bloom-3b", 30, 2560, 32),  # tr11c-2B5-ml
    "bloom-7b1": _bloom("bloom-7b1", 30, 4096, 32),  # tr11f-6B3-ml
    "bloom-176b": _bloom("bloom-176b", 70, 14336, 112),  # tr11-176B-ml
}


def check_vocab(tokenizer: Any, cfg: ModelConfig, where: str | os.PathLike) -> None:
    """A tokenizer with ids past the model's embedding rows is not this model's tokenizer.

    The model may have more rows than tokens (BLOOM pads 250680 to 250880), never fewer:
    `where` (the tokenizer file) is named in the error, with both sizes.
    """
    n = tokenizer.get_vocab_size()
    if n > cfg.padded_vocab_size:
        raise BloomforgeError(
            f"{where}: the tokenizer has {n} tokens, the model's vocabulary only "
            f"{cfg.padded_vocab_size} (model.vocab_size={cfg.vocab_size}, padded); "
            "use the tokenizer the model was trained with"
        )
