"""The parallel layout: (pp, dp, tp) sizes that multiply to the world size, and the device mesh.

In: the recipe's `parallel` section and the world size. Out: `ParallelDims` with checked sizes
(an inexact factorisation is a one-line error naming the keys) and `build_mesh`, a DeviceMesh with
dimensions named "pp", "dp", "tp" (Megatron's order: tensor parallel innermost, on the fastest
links; pipeline outermost); `local_part`, a rank's part of a possibly sharded tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bloomforge.errors import BloomforgeError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ParallelDims:
    pp: int
    dp: int
    tp: int

    @classmethod
    def from_config(cls, dp: int, tp: int, pp: int, world_size: int) -> ParallelDims:
        for key, value in (("tp", tp), ("pp", pp)):
            if value < 1:
                raise BloomforgeError(f"parallel.{key}={value}: must be >= 1")
        if dp == -1:
            if world_size % (tp * pp):
                raise BloomforgeError(
                    f"world size {world_size} is not divisible by parallel.tp x parallel.pp "
                    f"= {tp} x {pp}"
                )
            dp = world_size // (tp * pp)
        if dp < 1 or dp * tp * pp != world_size:
            raise BloomforgeError(
                f"parallel.pp x dp x tp = {pp} x {dp} x {tp} = {pp * dp * tp} does not equal "
                f"the world size {world_size}"
            )
        return cls(pp=pp, dp=dp, tp=tp)

    @property
    def world_size(self) -> int:
        return self.pp * self.dp * self.tp


def build_mesh(dims: ParallelDims, device_type: str):
    """The (pp, dp, tp) DeviceMesh over the initialised default process group."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(
        device_type, (dims.pp, dims.dp, dims.tp), mesh_dim_names=("pp", "dp", "tp")
    )


def local_part(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: a DTensor's local shard, a plain tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t
