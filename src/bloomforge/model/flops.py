"""The one place that counts parameters and FLOPs of a BLOOM-family model.

In: a `ModelConfig` (and a sequence length / batch). Out: exact parameter counts by component and
matmul FLOPs per token or per iteration. Every other module (model info, the planner, throughput
and MFU logging) calls these functions instead of re-deriving them.

FLOPs follow Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM", appendix): only matrix multiplications count, a multiply-add is 2
FLOPs, the backward pass costs twice the forward, full activation recomputation adds one more
forward of the transformer layers (not of the logits). Per token and layer the forward pass
costs 2*(3h^2 + h^2) for QKV and the output projection, 2*n*h*f for an MLP with n matrices of
h x f (n=2 for GeLU, 3 for GLU variants) and 4*s*h for QK^T and attention x V; the logits cost
2*h*V. For BLOOM's GeLU MLP (f = 4h) the layer term is 24h^2 (1 + s/6h), so with recomputation
an iteration costs Megatron's 96*B*s*l*h^2*(1 + s/6h + V/16lh), i.e. 4 x 24*B*s*l*h^2*(...);
GLU variants with f = 4h have 32h^2 where GeLU has 24h^2.
"""

from __future__ import annotations

from dataclasses import dataclass

from bloomforge.model.config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    embedding: int
    positions: int
    norms: int
    attention: int
    mlp: int
    output: int  # separate output matrix; 0 when tied to the embedding

    @property
    def total(self) -> int:
        return (
            self.embedding + self.positions + self.norms + self.attention + self.mlp + self.output
        )

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding - self.output - self.positions


def count_params(cfg: ModelConfig) -> ParamCount:
    """Exact parameter count of `BloomLM(cfg)` (a test checks it against `numel()`)."""
    h, f, L, V = cfg.hidden, cfg.ffn_hidden, cfg.n_layer, cfg.padded_vocab_size
    ln = 2 * h  # LayerNorm weight + bias
    attention = (3 * h * h + 3 * h) + (h * h + h)
    n_in = 2 if cfg.is_glu else 1
    mlp = n_in * (h * f + f) + (f * h + h)
    norms = L * 2 * ln + ln + (ln if cfg.embedding_layernorm else 0)
    return ParamCount(
        embedding=V * h,
        positions=cfg.max_seq_len * h if cfg.position == "learned" else 0,
        norms=norms,
        attention=L * attention,
        mlp=L * mlp,
        output=0 if cfg.tie_embeddings else V * h,
    )


def layer_forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Matmul FLOPs of one transformer layer's forward pass, per token."""
    h, f = cfg.hidden, cfg.ffn_hidden
    n_mlp = 3 if cfg.is_glu else 2
    return 2 * 4 * h * h + 2 * n_mlp * h * f + 4 * seq_len * h


def logits_forward_flops_per_token(cfg: ModelConfig) -> int:
    return 2 * cfg.hidden * cfg.padded_vocab_size


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return cfg.n_layer * layer_forward_flops_per_token(cfg, seq_len) + (
        logits_forward_flops_per_token(cfg)
    )


def train_flops_per_token(cfg: ModelConfig, seq_len: int, recompute: bool = False) -> int:
    """FLOPs of forward + backward per trained token.

    `recompute=False` gives *model* FLOPs (what MFU divides by); `recompute=True` gives the
    hardware FLOPs of full activation recomputation, Megatron's formula.
    """
    layer_passes = 4 if recompute else 3
    layers = cfg.n_layer * layer_forward_flops_per_token(cfg, seq_len)
    return layer_passes * layers + 3 * logits_forward_flops_per_token(cfg)


def train_flops_per_iteration(
    cfg: ModelConfig, batch_size: int, seq_len: int, recompute: bool = False
) -> int:
    return batch_size * seq_len * train_flops_per_token(cfg, seq_len, recompute)


def megatron_flops_per_iteration(cfg: ModelConfig, batch_size: int, seq_len: int) -> float:
    """Narayanan et al. 2021, eq. (3), literally: 96*B*s*l*h^2*(1 + s/6h + V/16lh).

    Valid for the GeLU MLP with f = 4h; kept as the published reference that
    `train_flops_per_iteration(..., recompute=True)` must reproduce.
    """
    B, s, L, h, V = batch_size, seq_len, cfg.n_layer, cfg.hidden, cfg.padded_vocab_size
    return 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))


def approx_train_flops(n_params: float, tokens: float, recompute: bool = False) -> float:
    """The rule of thumb C = 6ND (Kaplan et al. 2020, section 2.1), 8ND with full recomputation.

    2ND forward + 4ND backward; full activation recomputation repeats the forward (2ND more),
    which is Narayanan et al. 2021's 4x instead of 3x. Attention and logits are left out, so
    this sits a few percent under `train_flops_per_token(...) * tokens` for 2048-token contexts.
    """
    return (8.0 if recompute else 6.0) * n_params * tokens
