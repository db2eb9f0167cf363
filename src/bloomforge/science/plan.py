"""The training planner: compute, compute-optimal size, shapes, memory, time and energy.

In: either a budget (GPUs x days or GPU-hours, a GPU type, an achieved TFLOPs/GPU) or a model
and a token count, plus a parallel layout. Out: a json-able dict (`plan_budget`, `plan_model`)
and its text rendering (`format_plan`). FLOPs come from `bloomforge.model.flops`, memory from
`bloomforge.science.memory`, laws from `bloomforge.science.laws`, energy from
`bloomforge.science.carbon`.

"Achieved TFLOPs" are hardware FLOPs per second per GPU as Megatron reports them (they count
the recomputed forward: BLOOM's ~150 TFLOPs on A100s, Scao et al. 2022 section 3.4), so a
budget with full recomputation trains 6/8 of its FLOPs as model FLOPs (C = 8ND vs 6ND).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from bloomforge.errors import BloomforgeError
from bloomforge.hardware import GPU
from bloomforge.model.config import BLOOM_VOCAB, ModelConfig
from bloomforge.model.flops import (
    approx_train_flops,
    count_params,
    megatron_flops_per_iteration,
    train_flops_per_token,
)
from bloomforge.science.carbon import energy_from_gpu_hours
from bloomforge.science.laws import PUBLISHED, ScalingLaw, chinchilla_rule
from bloomforge.science.memory import GIB, Layout, estimate_memory

DEFAULT_MFU = 0.4  # hardware FLOPs utilisation assumed when --achieved-tflops is not given
# Megatron's --make-vocab-size-divisible-by default; the padded vocabulary is a multiple of
# 128 x TP so each TP shard of the embedding has the same size (Megatron-LM, tokenizer.py).
VOCAB_DIVISOR = 128


def achieved_tflops(gpu: GPU, given: float | None) -> float:
    return given if given is not None else DEFAULT_MFU * gpu.peak_tflops


def optimal_allocation(c_model: float, rule: str, law: ScalingLaw | None) -> dict[str, Any]:
    """Compute-optimal N and D for `c_model` = 6ND FLOPs under a rule or a law."""
    if law is not None:
        n, d = law.optimal(c_model)
        src = law.source or "fitted law"
    elif rule == "chinchilla":
        n, d = chinchilla_rule(c_model)
        src = "D = 20 N (Hoffmann et al. 2022)"
    elif rule in PUBLISHED:
        law = PUBLISHED[rule]
        n, d = law.optimal(c_model)
        src = law.source
    else:
        raise BloomforgeError(f"unknown --optimal '{rule}' (chinchilla, {', '.join(PUBLISHED)})")
    out = {"rule": src, "params": n, "tokens": d, "tokens_per_param": d / n}
    if law is not None and law.form != "compute":
        out["loss"] = law.loss(n, d)
    return out


def candidate_shapes(
    n_target: float,
    tp: int = 1,
    pp: int = 1,
    vocab_size: int = BLOOM_VOCAB,
    seq_len: int = 2048,
    k: int = 5,
    tolerance: float = 0.1,
) -> list[ModelConfig]:
    """BLOOM-architecture shapes within `tolerance` of `n_target` parameters.

    Constraints (Megatron-LM's arguments.py checks): layers divisible by PP, heads divisible by
    TP, hidden divisible by heads, head dim 64-128, hidden a multiple of 128; the vocabulary is
    padded to 128 x TP. Width/depth stays in 32 <= h/L <= 256, the flat region of Kaplan et al.
    2020 (figure 5) that the BLOOM family spans (560m: 43, 176b: 205). Ranked by closeness to
    the target and by h/L near 128 together.
    """
    pad = VOCAB_DIVISOR * tp
    found: dict[tuple[int, int], ModelConfig] = {}
    for n_layer in range(pp, 257, pp):
        # 12 L h^2 + (13 L + V) h ~ N (per layer: 12h^2 + 13h with the two LayerNorms).
        a, b = 12.0 * n_layer, 13.0 * n_layer + vocab_size
        h_cont = (-b + math.sqrt(b * b + 4 * a * n_target)) / (2 * a)
        for hidden in {max(128, 128 * math.floor(h_cont / 128)), 128 * math.ceil(h_cont / 128)}:
            if not 32 <= hidden / n_layer <= 256:
                continue
            head_dim = next(
                (d for d in (128, 64, 96, 80, 112) if hidden % d == 0 and (hidden // d) % tp == 0),
                None,
            )
            if head_dim is None:
                continue
            cfg = ModelConfig(
                n_layer=n_layer,
                hidden=hidden,
                n_head=hidden // head_dim,
                vocab_size=vocab_size,
                pad_vocab_multiple=pad,
                max_seq_len=seq_len,
            )
            if abs(count_params(cfg).total / n_target - 1) <= tolerance:
                found[(n_layer, hidden)] = cfg
    # 5% off in size weighs like a factor 2 off the h/L = 128 sweet spot.
    ranked = sorted(
        found.values(),
        key=lambda c: (
            abs(count_params(c).total / n_target - 1) / 0.05
            + abs(math.log2(c.hidden / c.n_layer / 128))
        ),
    )
    return ranked[:k]


def _layout_for(gpus: int | None, layout: Layout) -> Layout:
    if gpus is None:
        return layout
    if gpus % (layout.tp * layout.pp):
        raise BloomforgeError(
            f"--gpus {gpus} is not divisible by --tp {layout.tp} x --pp {layout.pp}"
        )
    return replace(layout, dp=gpus // (layout.tp * layout.pp))


def _memory_row(cfg: ModelConfig, layout: Layout, gpu: GPU) -> dict[str, Any]:
    mem = estimate_memory(cfg, layout)
    p = count_params(cfg)
    return {
        "n_layer": cfg.n_layer,
        "hidden": cfg.hidden,
        "n_head": cfg.n_head,
        "head_dim": cfg.head_dim,
        "padded_vocab_size": cfg.padded_vocab_size,
        "params": p.total,
        "memory": mem.to_dict(),
        "fits": mem.fits(gpu.memory_gib),
    }


def _time_energy(
    flops_hw: float, gpus: int | None, gpu: GPU, tflops: float, utilisation: float, pue: float
) -> dict[str, Any]:
    gpu_seconds = flops_hw / (tflops * 1e12)
    gpu_hours = gpu_seconds / 3600.0
    out: dict[str, Any] = {"gpu_hours": gpu_hours}
    if gpus:
        out["days"] = gpu_hours / gpus / 24.0
    out["energy"] = energy_from_gpu_hours(gpu_hours, gpu.tdp_w, utilisation, pue)
    return out


def plan_budget(
    gpu: GPU,
    gpu_hours: float,
    gpus: int | None = None,
    tflops: float | None = None,
    recompute: bool = False,
    rule: str = "chinchilla",
    law: ScalingLaw | None = None,
    layout: Layout | None = None,
    utilisation: float = 1.0,
    pue: float = 1.0,
    n_shapes: int = 5,
) -> dict[str, Any]:
    """What to train with a budget: FLOPs, optimal N and D, candidate shapes with memory."""
    tflops = achieved_tflops(gpu, tflops)
    layout = _layout_for(gpus, layout or Layout(recompute="full" if recompute else "none"))
    c_hw = gpu_hours * 3600.0 * tflops * 1e12  # GPUs x time x achieved FLOP/s
    c_model = c_hw * (6.0 / 8.0 if recompute else 1.0)  # 8ND of hardware FLOPs train 6ND
    opt = optimal_allocation(c_model, rule, law)
    shapes = []
    for cfg in candidate_shapes(
        opt["params"], layout.tp, layout.pp, seq_len=layout.seq_len, k=n_shapes
    ):
        row = _memory_row(cfg, layout, gpu)
        # Tokens this exact shape trains in the budget, with its exact FLOPs/token.
        row["tokens"] = c_hw / train_flops_per_token(cfg, layout.seq_len, recompute)
        shapes.append(row)
    return {
        "mode": "budget",
        "gpu": gpu.name,
        "gpus": gpus,
        "achieved_tflops": tflops,
        "recompute": recompute,
        "layout": layout.__dict__,
        "compute_hardware_flops": c_hw,
        "compute_model_flops": c_model,
        "optimal": opt,
        "shapes": shapes,
        **_time_energy(c_hw, gpus, gpu, tflops, utilisation, pue),
    }


def plan_model(
    cfg: ModelConfig,
    tokens: float,
    gpu: GPU,
    gpus: int | None = None,
    tflops: float | None = None,
    layout: Layout | None = None,
    utilisation: float = 1.0,
    pue: float = 1.0,
) -> dict[str, Any]:
    """Cost of training `cfg` on `tokens`: FLOPs three ways, time, GPU-hours, memory."""
    tflops = achieved_tflops(gpu, tflops)
    layout = _layout_for(gpus, layout or Layout())
    s, recompute = layout.seq_len, layout.recompute == "full"
    n = count_params(cfg).total
    exact = tokens * train_flops_per_token(cfg, s, recompute)
    # Narayanan et al. 2021, eq. 3 counts one iteration of B sequences with full recompute;
    # tokens / s sequences make tokens / (B s) iterations whatever B is.
    megatron = megatron_flops_per_iteration(cfg, 1, s) * tokens / s
    return {
        "mode": "model",
        "model": cfg.preset or "custom",
        "params": n,
        "tokens": tokens,
        "gpu": gpu.name,
        "gpus": gpus,
        "achieved_tflops": tflops,
        "layout": layout.__dict__,
        "flops_6nd": approx_train_flops(n, tokens),
        "flops_8nd": approx_train_flops(n, tokens, recompute=True),
        "flops_exact": exact,
        "flops_megatron": megatron,
        "compute_hardware_flops": exact,
        "shapes": [_memory_row(cfg, layout, gpu)],
        **_time_energy(exact, gpus, gpu, tflops, utilisation, pue),
    }


def _e(x: float) -> str:
    return f"{x:.3e}"


def format_plan(plan: dict[str, Any], gpu_memory_gib: float) -> str:
    lines = []
    lay = plan["layout"]
    lines.append(
        f"GPU {plan['gpu']} x {plan['gpus'] or '?'} at {plan['achieved_tflops']:.1f} TFLOPs "
        f"achieved; layout TP{lay['tp']} PP{lay['pp']} DP{lay['dp']} ZeRO-{lay['zero']} "
        f"micro-batch {lay['micro_batch']} seq {lay['seq_len']} recompute {lay['recompute']}"
    )
    if plan["mode"] == "budget":
        o = plan["optimal"]
        lines += [
            f"compute: {_e(plan['compute_hardware_flops'])} hardware FLOPs, "
            f"{_e(plan['compute_model_flops'])} model FLOPs (6ND)",
            f"compute-optimal ({o['rule']}): N = {o['params']:.3e} params, "
            f"D = {o['tokens']:.3e} tokens ({o['tokens_per_param']:.1f} tokens/param)"
            + (f", loss {o['loss']:.3f}" if "loss" in o else ""),
        ]
    else:
        lines += [
            f"model {plan['model']}: {plan['params']:,} params, {plan['tokens']:.3e} tokens",
            f"FLOPs: 6ND {_e(plan['flops_6nd'])}  8ND {_e(plan['flops_8nd'])}  "
            f"exact {_e(plan['flops_exact'])}  Megatron eq. 3 {_e(plan['flops_megatron'])}",
        ]
    days = f", {plan['days']:.1f} days" if "days" in plan else ""
    en = plan["energy"]
    lines.append(f"time: {plan['gpu_hours']:,.0f} GPU-hours{days}")
    lines.append(
        f"energy: {en['energy_mwh']:.1f} MWh (utilisation {en['utilisation']}, PUE {en['pue']})"
    )
    if "co2_tonnes" in plan:
        lines.append(f"CO2: {plan['co2_tonnes']:.1f} tCO2eq at {plan['grid']} gCO2/kWh")
    header = (
        f"{'layers':>6} {'hidden':>6} {'heads':>5} {'params':>10} {'weights':>8} {'grads':>8} "
        f"{'optim':>8} {'acts':>8} {'total':>8}  fits {gpu_memory_gib:g} GiB"
    )
    where = "memory per GPU (GiB, busiest pipeline stage)"
    if not plan["gpus"]:
        where += "; no --gpus, so DP = 1 and ZeRO partitions nothing"
    lines += ["", where + ":", header]
    for r in plan["shapes"]:
        m = r["memory"]
        cols = [m[k] / GIB for k in ("weights", "gradients", "optimizer", "activations", "total")]
        lines.append(
            f"{r['n_layer']:>6} {r['hidden']:>6} {r['n_head']:>5} {r['params'] / 1e9:>9.2f}B "
            + " ".join(f"{c:>8.1f}" for c in cols)
            + f"  {'yes' if r['fits'] else 'NO'}"
            + (f"  ({r['tokens']:.3e} tokens)" if "tokens" in r else "")
        )
    if not plan["shapes"]:
        lines.append("(no shape within 10% of N satisfies the TP/PP constraints)")
    return "\n".join(lines)
