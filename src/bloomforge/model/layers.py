"""Building blocks: the MLP variants and the position encodings other than ALiBi.

In: hidden states (B, T, h) and token positions (B, T). Out: tensors of the same shapes.
MLP variants: BLOOM's 4h GeLU (tanh form) and the GLU family (Shazeer 2020: SwiGLU, GeGLU,
ReGLU, with the same 4h width so the FLOP counter's 32h^2 holds). Positions: sinusoidal
(Vaswani et al. 2017) and rotary (Su et al. 2021, rotate-half form as in GPT-NeoX / Llama).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bloomforge.model.config import ModelConfig


def _gelu_tanh(x: Tensor) -> Tensor:
    # BLOOM's bias-GeLU is the tanh approximation (Megatron's fused kernel).
    return F.gelu(x, approximate="tanh")


_GLU_ACTIVATIONS = {"swiglu": F.silu, "geglu": _gelu_tanh, "reglu": F.relu}


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.mlp
        self.up = nn.Linear(cfg.hidden, cfg.ffn_hidden)
        self.gate = nn.Linear(cfg.hidden, cfg.ffn_hidden) if cfg.is_glu else None
        self.down = nn.Linear(cfg.ffn_hidden, cfg.hidden)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is None:
            return self.down(_gelu_tanh(self.up(x)))
        return self.down(_GLU_ACTIVATIONS[self.kind](self.gate(x)) * self.up(x))


def rotary_inv_freq(head_dim: int, base: float, device: torch.device | None = None) -> Tensor:
    return 1.0 / (
        base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )


def rotary_cos_sin(
    positions: Tensor, inv_freq: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos, sin of shape (B, 1, T, hs) for positions (B, T)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, hs)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, nh, T, hs) by the position angles (rotate-half pairing)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def sinusoidal_embedding(positions: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """(B, T, dim): sin on even, cos on odd channels, wavelengths 2*pi .. 10000*2*pi."""
    inv_freq = rotary_inv_freq(dim, 10000.0, positions.device)
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, T, dim/2)
    out = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)
    return out[..., :dim].to(dtype)
