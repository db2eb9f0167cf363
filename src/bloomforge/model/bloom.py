"""The BLOOM decoder (and its ablation variants) in one file.

In: token ids (B, T), optionally a padding mask (B, T_past + T), prefix lengths (B,), document
ids (B, T) of a packed batch, and a `KVCache`. Out: logits (B, T, padded_vocab).

BLOOM as released (Scao et al. 2022; transformers' BloomForCausalLM is the parity reference):
token embedding -> LayerNorm -> n_layer pre-LN blocks [LN -> fused QKV (with bias, head-major
rows: per head q, k, v) -> attention with ALiBi -> dense] + [LN -> 4h tanh-GeLU MLP] -> final LN
-> logits through the tied embedding. The model knows nothing of parallelism; blocks live in a
ModuleDict keyed "0".."n_layer-1" so pipeline stages can drop the ones they do not own and
checkpoint names stay stable. Build it on the `meta` device and call `init_weights`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomforge.model.attention import AttentionContext, MaskSpec, alibi_slopes, attend
from bloomforge.model.config import ModelConfig
from bloomforge.model.layers import (
    MLP,
    apply_rotary,
    rotary_cos_sin,
    rotary_inv_freq,
    sinusoidal_embedding,
)
from bloomforge.model.loss import fused_linear_cross_entropy


class KVCache:
    """Keys and values of every layer, up to `max_len` positions: (n_layer, B, nh, max_len, hs)."""

    def __init__(
        self,
        cfg: ModelConfig,
        batch_size: int,
        max_len: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ) -> None:
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        # Which of the model's heads this module computes: all of them, unless tensor
        # parallelism gives each rank a contiguous group (it sets n_head and head_start).
        self.head_start = 0
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)

    def forward(
        self,
        x: Tensor,
        ctx: AttentionContext,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
    ) -> Tensor:
        B, T, _ = x.shape
        # Head-major fused layout (B, T, nh, 3, hs), as Megatron and BLOOM checkpoints store it.
        qkv = self.qkv(x).view(B, T, self.n_head, 3, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(dim=3))  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer_id, k, v)
        y = attend(q, k, v, ctx.heads(self.head_start, self.n_head), self.training)
        return self.out(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(
        self,
        x: Tensor,
        ctx: AttentionContext,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        x = x + self.dropout(self.attention(self.attn_norm(x), ctx, rope, cache))
        return x + self.dropout(self.mlp(self.ffn_norm(x)))


class BloomLM(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V, h = cfg.padded_vocab_size, cfg.hidden
        self.tok_embeddings = nn.Embedding(V, h)
        self.pos_embeddings = (
            nn.Embedding(cfg.max_seq_len, h) if cfg.position == "learned" else None
        )
        self.emb_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps) if cfg.embedding_layernorm else None
        # Megatron's embedding dropout, with the hidden-dropout probability (language_model.py).
        self.emb_dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleDict({str(i): Block(cfg, i) for i in range(cfg.n_layer)})
        self.norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(h, V, bias=False)
        # Derived constants, recomputed by init_weights (they do not survive a meta build).
        self.register_buffer("alibi_slopes", torch.empty(cfg.n_head), persistent=False)
        self.register_buffer("rope_inv_freq", torch.empty(cfg.head_dim // 2), persistent=False)

    @classmethod
    def build(
        cls,
        cfg: ModelConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int | None = None,
    ) -> BloomLM:
        """Build on `meta` (no memory, no init), then allocate on `device` and initialise."""
        with torch.device("meta"):
            model = cls(cfg)
        model.to_empty(device=device)
        if seed is not None:
            torch.manual_seed(seed)
        model.init_weights()
        model.to(dtype)
        model.init_buffers()  # keep the rotary frequencies in float32
        return model

    @torch.no_grad()
    def init_buffers(self, device: torch.device | None = None) -> None:
        """Recompute the non-persistent buffers (ALiBi slopes, rotary frequencies)."""
        device = device or next(self.parameters()).device
        self.alibi_slopes = alibi_slopes(self.cfg.n_head).to(device)
        self.rope_inv_freq = rotary_inv_freq(self.cfg.head_dim, self.cfg.rotary_base, device)

    @torch.no_grad()
    def init_weights(self, buffer_device: torch.device | None = None) -> None:
        """BLOOM/Megatron init: N(0, std) weights, std / sqrt(2 n_layer) on output projections,
        zero biases, unit LayerNorms."""
        cfg = self.cfg
        self.init_buffers(buffer_device)
        std = cfg.std
        out_std = std / math.sqrt(2.0 * cfg.n_layer) if cfg.scale_output_init else std
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, nn.Linear):
                is_out = name.endswith(("attention.out", "mlp.down"))
                nn.init.normal_(module.weight, std=out_std if is_out else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        prefix_len: Tensor | None = None,
        doc_ids: Tensor | None = None,
        is_input: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
        targets: Tensor | None = None,
        loss_weights: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, padded_vocab) for `input_ids` (B, T).

        input_ids may also be hidden states (B, T, h) from the previous pipeline stage; a model
        whose `norm` was removed (a pipeline stage before the last) returns its hidden states.
        targets: (B, T) next-token ids (-100: not counted): return the mean cross-entropy,
        fused with the output projection (model.loss), instead of logits.
        loss_weights: (B, T) optional weights of the targets: the loss is sum(w CE) / sum(w).
        attention_mask: (B, T_past + T), 1 for tokens, 0 for (left) padding, covering the cache.
        prefix_len: (B,) prefix-LM prefix length in columns (needs attention="prefix_lm").
        doc_ids: (B, T) document index of each token of a packed sequence (no cross-doc attention).
        is_input: (B, T) bool, packed multitask samples: tokens of each sample's input, which
            attend to each other bidirectionally (non-causal finetuning; needs doc_ids).
        position_ids: (B, T) explicit positions; by default they count real tokens from 0.
        """
        cfg = self.cfg
        B, T = input_ids.shape[:2]
        past = cache.length if cache is not None else 0
        spec = self._mask_spec(
            B, T, past, attention_mask, prefix_len, doc_ids, position_ids, input_ids.device
        )
        if is_input is not None:
            if doc_ids is None:
                raise ValueError("is_input needs doc_ids (the samples of a packed row)")
            spec.is_input = is_input.to(device=input_ids.device, dtype=torch.bool)
        if input_ids.is_floating_point():
            x = input_ids  # (B, T, h) from the previous pipeline stage: embedded there
        else:
            # Megatron-DeepSpeed's order: word embedding -> its LayerNorm (mpu/layers.py,
            # VocabParallelEmbedding with --embed-layernorm) -> + absolute positions -> dropout
            # (model/language_model.py, Embedding.forward).
            x = self.tok_embeddings(input_ids)  # (B, T, h)
            if self.emb_norm is not None:
                x = self.emb_norm(x)
            if self.pos_embeddings is not None:
                x = x + self.pos_embeddings(spec.q_pos)
            elif cfg.position == "sinusoidal":
                x = x + sinusoidal_embedding(spec.q_pos, cfg.hidden, x.dtype)
            x = self.emb_dropout(x)
        rope = None
        if cfg.position == "rotary":
            rope = rotary_cos_sin(spec.q_pos, self.rope_inv_freq, x.dtype)
        slopes = self.alibi_slopes if cfg.position == "alibi" else None
        ctx = AttentionContext(spec, cfg.attn_impl, slopes, x.dtype, cfg.attention_dropout)

        for block in self.layers.values():
            x = block(x, ctx, rope, cache)
        if cache is not None:
            cache.length += T
        if self.norm is None:
            return x
        x = self.norm(x)
        if targets is not None:
            return fused_linear_cross_entropy(x, self.output_weight, targets, weights=loss_weights)
        if return_hidden:
            return x
        return self.logits(x)

    @property
    def output_weight(self) -> Tensor:
        """(V, h): the tied embedding (BLOOM) or the separate output matrix."""
        return self.tok_embeddings.weight if self.output is None else self.output.weight

    def logits(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.output_weight)

    def _mask_spec(
        self,
        B: int,
        T: int,
        past: int,
        attention_mask: Tensor | None,
        prefix_len: Tensor | None,
        doc_ids: Tensor | None,
        position_ids: Tensor | None,
        device: torch.device,
    ) -> MaskSpec:
        Tk = past + T
        if prefix_len is not None and self.cfg.attention != "prefix_lm":
            raise ValueError("prefix_len given but the model's attention is 'causal'")
        if self.cfg.attention == "prefix_lm" and prefix_len is None:
            prefix_len = torch.zeros(B, dtype=torch.long, device=device)
        if doc_ids is not None and past:
            raise ValueError("doc_ids are for packed training batches, not cached decoding")
        key_valid = None
        if attention_mask is not None:
            if attention_mask.shape != (B, Tk):
                raise ValueError(
                    f"attention_mask must have shape {(B, Tk)} (past + new), "
                    f"got {tuple(attention_mask.shape)}"
                )
            key_valid = attention_mask.to(device=device, dtype=torch.bool)
            if bool(key_valid.all()):
                key_valid = None
        if position_ids is not None:
            if past:
                raise ValueError("position_ids with a KV cache are not supported")
            k_pos = q_pos = position_ids.to(device)
        elif key_valid is not None:
            k_pos = (key_valid.long().cumsum(-1) - 1).clamp(min=0)  # count real tokens only
            q_pos = k_pos[:, past:]
        else:
            k_pos = torch.arange(Tk, device=device)[None]
            q_pos = k_pos[:, past:]
        return MaskSpec(T, Tk, q_pos, k_pos, key_valid, prefix_len, doc_ids)
