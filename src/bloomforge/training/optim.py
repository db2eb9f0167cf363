"""AdamW as BLOOM ran it, and the optimizer state as safetensors.

In: a model and the train section. Out: `torch.optim.AdamW` with two parameter groups: weight
decay on matrices and embeddings, none on biases and LayerNorm (incl. embedding LayerNorm)
weights, as Megatron's `get_params_for_weight_decay_optimization` splits them. Fused kernels on
GPU, foreach elsewhere. `optimizer_tensors` / `load_optimizer_tensors` turn the state into named
tensors (`exp_avg.<param>`) so it is stored without pickle.
"""

from __future__ import annotations

import torch
from torch import nn

from bloomforge.errors import BloomforgeError
from bloomforge.recipe import TrainConfig


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and norm weights (1-d tensors) are not decayed; matrices and embeddings are."""
    return param.ndim < 2


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not no_decay(n, p)]
    plain = [p for n, p in named if no_decay(n, p)]
    on_gpu = all(p.device.type == "cuda" for _, p in named)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        fused=on_gpu or None,
        foreach=None if on_gpu else True,
    )


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Names of the optimizer's parameters in its own (state_dict index) order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    out = {}
    state = optimizer.state_dict()["state"]
    for index, name in enumerate(_param_names(model, optimizer)):
        for key, value in state.get(index, {}).items():
            out[f"{key}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    return out


def load_optimizer_tensors(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    source: str,
) -> None:
    sd = optimizer.state_dict()
    names = _param_names(model, optimizer)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for index, name in enumerate(names):
        entry = {k.split(".", 1)[0]: v for k, v in tensors.items() if k.split(".", 1)[1] == name}
        if entry:
            state[index] = entry
    known = {f"{k}.{n}" for i, n in enumerate(names) for k in state.get(i, {})}
    if len(known) != len(tensors):
        extra = sorted(set(tensors) - known)[:3]
        raise BloomforgeError(f"{source}: optimizer state for unknown parameters {extra}")
    sd["state"] = state
    optimizer.load_state_dict(sd)
