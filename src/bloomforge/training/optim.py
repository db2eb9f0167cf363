"""AdamW as BLOOM ran it, and the optimizer state as safetensors.

In: a model and the train section. Out: `torch.optim.AdamW` with two parameter groups: weight
decay on matrices and embeddings, none on biases and LayerNorm (incl. embedding LayerNorm)
weights, as Megatron's `get_params_for_weight_decay_optimization` splits them. Fused kernels on
GPU, foreach elsewhere. Its state is saved by name (`exp_avg.<param>`) through
`bloomforge.parallel.checkpoint`, for any layout.
"""

from __future__ import annotations

import torch
from torch import nn

from bloomforge.recipe import TrainConfig


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and norm weights (1-d tensors) are not decayed; matrices and embeddings are."""
    return param.ndim < 2


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    on_gpu = all(p.device.type == "cuda" for _, p in named)
    # Groups by decay and by kind: under tensor parallelism some parameters are DTensors and
    # some plain tensors, and one foreach/fused kernel call cannot mix the two.
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for n, p in named:
        groups.setdefault((no_decay(n, p), hasattr(p, "device_mesh")), []).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": 0.0 if plain else cfg.weight_decay}
            for (plain, _), params in sorted(groups.items())
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=on_gpu or None,
        foreach=None if on_gpu else True,
    )
    init_state(opt)
    return opt


def init_state(opt: torch.optim.AdamW) -> None:
    """Create AdamW's state (step 0, zero moments) as its first step would.

    Without it, DCP's `get_optimizer_state_dict` initialises an empty state itself by running a
    zero-lr step, which counts as step 1: a checkpoint written (or a resume started) before the
    first real update (e.g. after fp16 overflow skips) would shift Adam's bias correction by one
    step against an uninterrupted run."""
    for group in opt.param_groups:
        for p in group["params"]:
            if opt.state.get(p):
                continue
            on_device = group.get("fused") or group.get("capturable")
            opt.state[p] = {
                "step": torch.zeros(
                    (), dtype=torch.float32, device=p.device if on_device else None
                ),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
