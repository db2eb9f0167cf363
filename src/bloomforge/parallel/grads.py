"""Gradient clipping when parameters are spread over ranks (FSDP shards, TP shards, pipeline
stages).

In: the parameters of this rank's model(s) and the mesh. Out: the global gradient norm (the same
float on every rank) and gradients scaled by min(1, max_norm / (norm + 1e-6)), as
`torch.nn.utils.clip_grad_norm_` does for one process. Each local square sum is reduced over the
mesh dimensions where the parameter is split (Shard or Partial placements), counted once where it
is replicated, and summed over pipeline stages; a tied embedding held by two stages is counted on
the first only.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist

from bloomforge.parallel.dims import local_part

_LAYOUTS = ((), ("dp",), ("tp",), ("dp", "tp"))


def _split_dims(t: torch.Tensor) -> tuple[str, ...]:
    placements = getattr(t, "placements", None)
    if placements is None:
        return ()
    names = t.device_mesh.mesh_dim_names
    return tuple(n for n, p in zip(names, placements, strict=True) if not p.is_replicate())


@torch.no_grad()
def clip_grad_norm(
    params: list[torch.nn.Parameter],
    counted: list[torch.nn.Parameter],
    max_norm: float,
    mesh,
    device: torch.device,
) -> torch.Tensor:
    """Global gradient norm over `counted` (float32 scalar, the same on every rank); then
    every gradient of `params` is clipped in place with it."""
    groups: dict[tuple[str, ...], list[torch.Tensor]] = defaultdict(list)
    for p in counted:
        if p.grad is None:
            continue
        g = p.grad
        groups[_split_dims(g)].append(local_part(g))
    unknown = set(groups) - set(_LAYOUTS)
    if unknown:
        raise ValueError(f"gradient layouts {sorted(unknown)} are not handled")
    total = torch.zeros((), device=device, dtype=torch.float32)
    for dims in _LAYOUTS:  # the same collectives, in the same order, on every rank
        grads = groups.get(dims, [])
        part = total.new_zeros(())
        if grads:
            part = torch.stack(torch._foreach_norm([g.float() for g in grads])).pow(2).sum()
        for name in dims:
            dist.all_reduce(part, group=mesh[name].get_group())
        total += part
    if mesh["pp"].size() > 1:
        dist.all_reduce(total, group=mesh["pp"].get_group())
    norm = total.sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    local = [local_part(p.grad) for p in params if p.grad is not None]
    if local:
        torch._foreach_mul_(local, coef.to(local[0].dtype))
    return norm
