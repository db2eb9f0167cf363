"""`bloomforge model info`: a model's shape, parameter count and FLOPs per token.

In: a `ModelConfig` and a sequence length. Out: a json-able dict and its text rendering; all
numbers come from `bloomforge.model.flops`.
"""

from __future__ import annotations

from typing import Any

from bloomforge.model.config import ModelConfig
from bloomforge.model.flops import (
    count_params,
    forward_flops_per_token,
    train_flops_per_token,
)


def describe(cfg: ModelConfig, seq_len: int) -> dict[str, Any]:
    params = count_params(cfg)
    return {
        "name": cfg.preset or "custom",
        "n_layer": cfg.n_layer,
        "hidden": cfg.hidden,
        "n_head": cfg.n_head,
        "head_dim": cfg.head_dim,
        "ffn_hidden": cfg.ffn_hidden,
        "vocab_size": cfg.vocab_size,
        "padded_vocab_size": cfg.padded_vocab_size,
        "max_seq_len": cfg.max_seq_len,
        "position": cfg.position,
        "mlp": cfg.mlp,
        "embedding_layernorm": cfg.embedding_layernorm,
        "attention": cfg.attention,
        "params": params.total,
        "params_non_embedding": params.non_embedding,
        "params_embedding": params.embedding,
        "seq_len": seq_len,
        "flops_per_token_forward": forward_flops_per_token(cfg, seq_len),
        "flops_per_token_train": train_flops_per_token(cfg, seq_len),
        "flops_per_token_train_recompute": train_flops_per_token(cfg, seq_len, recompute=True),
        "init_std": cfg.std,
    }


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:g}"


def format_description(d: dict[str, Any]) -> str:
    rows = [
        ("model", d["name"]),
        ("layers x hidden", f"{d['n_layer']} x {d['hidden']}"),
        ("heads x head dim", f"{d['n_head']} x {d['head_dim']}"),
        ("ffn hidden", f"{d['ffn_hidden']} ({d['mlp']})"),
        ("vocab (padded)", f"{d['vocab_size']} ({d['padded_vocab_size']})"),
        ("positions / attention", f"{d['position']} / {d['attention']}"),
        ("embedding LayerNorm", str(d["embedding_layernorm"])),
        ("parameters", f"{d['params']:,} ({_si(d['params'])})"),
        ("  non-embedding", f"{d['params_non_embedding']:,} ({_si(d['params_non_embedding'])})"),
        (f"FLOPs/token forward (s={d['seq_len']})", f"{d['flops_per_token_forward']:.4g}"),
        ("FLOPs/token train (fwd+bwd)", f"{d['flops_per_token_train']:.4g}"),
        ("FLOPs/token train, full recompute", f"{d['flops_per_token_train_recompute']:.4g}"),
        ("init std", f"{d['init_std']:.5f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
