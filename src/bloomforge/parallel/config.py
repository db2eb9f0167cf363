"""The recipe's `parallel` section: how `torchrun`'s world is cut (data x tensor x pipeline).

In: the mapping under `parallel:` of a recipe. Out: a validated `ParallelConfig`, read by
`parallel.dims` (mesh shape and checks) and `parallel.apply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bloomforge.typed_config import bounded


@dataclass
class ParallelConfig:
    dp: int = -1  # -1: whatever the world size leaves after tp x pp
    tp: int = bounded(1, ge=1)
    pp: int = bounded(1, ge=1)
    # FSDP2: 3 reshards parameters after forward; 2 keeps them (ZeRO-2-like)
    zero: Literal[2, 3] = 3
    pp_schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = "1f1b"
    pp_virtual_stages: int = bounded(1, ge=1)  # stages per pipeline rank (interleaved_1f1b)
    pp_embedding_as_layer: bool = False  # BLOOM: count the embedding as a block when splitting

    def __post_init__(self) -> None:
        if self.dp != -1 and self.dp < 1:
            raise ValueError(f"key 'dp': must be -1 (the rest) or >= 1, got {self.dp}")
