"""Memory per GPU of mixed-precision training under ZeRO and 3D parallelism.

In: a `ModelConfig` and a `Layout` (TP, PP, DP, ZeRO stage, micro-batch, sequence length,
recomputation). Out: a `MemoryEstimate` in bytes by component (weights, gradients, optimizer
states, activations) for the busiest pipeline stage.

Sources:
- Model states: Rajbhandari et al. 2020 ("ZeRO: Memory Optimizations Toward Training Trillion
  Parameter Models", section 3.1 and figure 1): mixed-precision Adam keeps 2 bytes of bf16/fp16
  weights, 2 bytes of gradients and K = 12 bytes of optimizer state (fp32 master weights,
  momentum, variance) per parameter, (2 + 2 + K)Ψ. Stage 1 partitions the optimizer states over
  the N_d data-parallel ranks, stage 2 also the gradients, stage 3 also the weights.
- Activations: Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", sections 4.1-4.3, table 2): per layer and micro-batch s·b·h·(34 + 5·a·s/h) bytes with
  16-bit activations; with tensor parallelism t and no sequence parallelism
  s·b·h·(10 + 24/t + 5·a·s/(h·t)); with sequence parallelism everything is divided by t;
  selective recomputation drops the 5·a·s/h attention term; full recomputation keeps only each
  layer's 2·s·b·h input. Under 1F1B pipelining the first stage holds p micro-batches of its L/p
  layers, i.e. L layers' worth (section 4.2.3). The output layer holds 4·s·b·h·(1 + v/h)/t
  (section 4.3). With full recomputation one layer at a time is rebuilt with its full
  activations during backward, which we add once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bloomforge.model.config import ModelConfig
from bloomforge.model.flops import count_params

Recompute = Literal["none", "selective", "full"]
GIB = 1024**3
# Rajbhandari et al. 2020, section 3.1: bf16 weights, bf16 grads, K = 12 for mixed-precision Adam.
WEIGHT_BYTES, GRAD_BYTES, OPTIM_BYTES = 2, 2, 12


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    zero: int = 0
    micro_batch: int = 1
    seq_len: int = 2048
    recompute: Recompute = "none"
    sequence_parallel: bool = False

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "micro_batch", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.zero not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {self.zero}")
        if self.recompute not in ("none", "selective", "full"):
            raise ValueError(f"recompute must be none, selective or full, got {self.recompute}")


@dataclass(frozen=True)
class MemoryEstimate:
    stage: str  # which pipeline stage is the busiest: "first", "last" or "only"
    params_per_gpu: float
    weights: float  # bytes
    gradients: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def fits(self, memory_gib: float, headroom: float = 0.9) -> bool:
        """True when the total stays under `headroom` of the card: the CUDA context, NCCL
        buffers and allocator fragmentation take the rest (a few GiB in practice)."""
        return self.total <= headroom * memory_gib * GIB

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total"] = self.total
        return d


def model_state_bytes(psi: float, dp: int, zero: int) -> tuple[float, float, float]:
    """(weights, gradients, optimizer) bytes of Ψ parameters on one of `dp` data-parallel ranks.

    Rajbhandari et al. 2020, figure 1: (2 + 2 + 12)Ψ; ZeRO stage 1 (P_os) divides the 12Ψ by
    N_d, stage 2 (P_os+g) also the gradients, stage 3 (P_os+g+p) also the weights.
    """
    return (
        WEIGHT_BYTES * psi / (dp if zero >= 3 else 1),
        GRAD_BYTES * psi / (dp if zero >= 2 else 1),
        OPTIM_BYTES * psi / (dp if zero >= 1 else 1),
    )


def activation_bytes_per_layer(cfg: ModelConfig, layout: Layout, recompute: Recompute) -> float:
    """Korthikanti et al. 2022, table 2: stored activations of one layer for one micro-batch."""
    s, b, h, a, t = layout.seq_len, layout.micro_batch, cfg.hidden, cfg.n_head, layout.tp
    sbh = s * b * h
    sp = t if layout.sequence_parallel else 1  # sequence parallelism splits the rest by t too
    if recompute == "full":
        return 2 * sbh / sp  # only the layer input is kept
    attention = 5 * a * s / h  # softmax, its dropout mask and the scores (dropped by selective)
    if layout.sequence_parallel:
        return sbh / t * (34 + (0 if recompute == "selective" else attention))
    return sbh * (10 + 24 / t + (0 if recompute == "selective" else attention / t))


def output_layer_bytes(cfg: ModelConfig, layout: Layout) -> float:
    """Korthikanti et al. 2022, section 4.3: final LayerNorm, logits and fp32 cross-entropy."""
    s, b, h, v = layout.seq_len, layout.micro_batch, cfg.hidden, cfg.padded_vocab_size
    return 4 * s * b * h * (1 + v / h) / layout.tp


def _stage_params(cfg: ModelConfig, layout: Layout) -> dict[str, float]:
    """Parameters of the first and last pipeline stage before TP sharding.

    The first stage owns the embedding (and its LayerNorm); with pp > 1 Megatron keeps a copy of
    the tied word embedding on the last stage for the output projection. Layers are spread as
    ceil(L / pp) on the busiest stage. LayerNorms and biases are replicated across TP ranks in
    Megatron; dividing everything by t under-counts them by < 0.1% for real shapes.
    """
    p = count_params(cfg)
    per_layer = (p.attention + p.mlp) / cfg.n_layer + 4 * cfg.hidden  # + two LayerNorms
    layers = math.ceil(cfg.n_layer / layout.pp) * per_layer
    embed = p.embedding + p.positions + (2 * cfg.hidden if cfg.embedding_layernorm else 0)
    head = 2 * cfg.hidden + (p.output if p.output else (p.embedding if layout.pp > 1 else 0))
    if layout.pp == 1:
        return {"only": p.total}
    return {"first": layers + embed, "last": layers + head}


def estimate_memory(cfg: ModelConfig, layout: Layout) -> MemoryEstimate:
    """Bytes per GPU on the busiest pipeline stage (see the module docstring for sources)."""
    per_layer = activation_bytes_per_layer(cfg, layout, layout.recompute)
    # Rebuilding one layer during backward needs its activations without recomputation.
    rebuild = activation_bytes_per_layer(cfg, layout, "none") if layout.recompute == "full" else 0.0
    layers_on_stage = math.ceil(cfg.n_layer / layout.pp)
    in_flight = {"only": 1, "first": layout.pp, "last": 1}  # 1F1B micro-batches held
    best: MemoryEstimate | None = None
    for stage, params in _stage_params(cfg, layout).items():
        psi = params / layout.tp
        weights, grads, optim = model_state_bytes(psi, layout.dp, layout.zero)
        acts = layers_on_stage * in_flight[stage] * per_layer + rebuild
        if stage in ("only", "last"):
            acts += output_layer_bytes(cfg, layout)
        est = MemoryEstimate(stage, psi, weights, grads, optim, acts)
        if best is None or est.total > best.total:
            best = est
    assert best is not None
    return best
