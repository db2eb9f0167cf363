"""The planner against published numbers: BLOOM-176B's run, Chinchilla, Megatron, ZeRO."""

from __future__ import annotations

import json
import math

import pytest

from bloomforge.cli import main
from bloomforge.hardware import GPUS, get_gpu
from bloomforge.model.config import ModelConfig
from bloomforge.model.flops import approx_train_flops, count_params, megatron_flops_per_iteration
from bloomforge.science.laws import PUBLISHED, chinchilla_rule
from bloomforge.science.memory import (
    GIB,
    Layout,
    activation_bytes_per_layer,
    estimate_memory,
    model_state_bytes,
)
from bloomforge.science.plan import candidate_shapes, plan_budget, plan_model

A100 = get_gpu("a100-80gb")
# BLOOM-176B (Scao et al. 2022 section 3.4; bigscience tr11-176B-ml): 384 A100-80GB, TP 4, PP 12,
# DP 8, ZeRO-1, micro-batch 2, sequence 2048, full activation checkpointing, ~150 TFLOPs/GPU.
BLOOM_LAYOUT = Layout(tp=4, pp=12, dp=8, zero=1, micro_batch=2, seq_len=2048, recompute="full")
# Luccioni et al. 2022, table 1: 1,082,990 GPU-hours for BLOOM's 366B tokens.
BLOOM_GPU_HOURS = 1_082_990


def gpt(n_layer: int, hidden: int, n_head: int) -> ModelConfig:
    return ModelConfig(n_layer=n_layer, hidden=hidden, n_head=n_head, vocab_size=51200)


def test_bloom_176b_gpu_hours_and_days_match_the_published_run():
    cfg = ModelConfig.from_name("bloom-176b")
    plan = plan_model(cfg, 366e9, A100, gpus=384, tflops=150.0, layout=BLOOM_LAYOUT)
    assert plan["gpu_hours"] == pytest.approx(BLOOM_GPU_HOURS, rel=0.15)
    # "about 3.5 months" (11 March to 6 July 2022 is 117 days of wall clock).
    assert 90 <= plan["days"] <= 125
    # The three FLOP counts agree to a few percent; 8ND is Megatron's eq. 4 rule.
    assert plan["flops_exact"] == pytest.approx(plan["flops_megatron"], rel=1e-9)
    assert plan["flops_8nd"] == pytest.approx(plan["flops_exact"], rel=0.03)


def test_bloom_176b_memory_fits_80gb_with_its_layout_and_not_without_parallelism():
    cfg = ModelConfig.from_name("bloom-176b")
    mem = estimate_memory(cfg, BLOOM_LAYOUT)
    assert mem.fits(80.0)
    assert 20 * GIB < mem.total < 72 * GIB
    # 176B / 48 model-parallel ranks, plus the embedding shard on the first stage.
    assert mem.params_per_gpu == pytest.approx((6 * 2.466e9 + 3.597e9) / 4, rel=0.01)
    flat = Layout(tp=1, pp=1, dp=384, zero=1, micro_batch=2, seq_len=2048, recompute="full")
    assert not estimate_memory(cfg, flat).fits(80.0)
    # Without recomputation 12 micro-batches x 6 layers of activations do not fit either.
    no_recompute = Layout(tp=4, pp=12, dp=8, zero=1, micro_batch=2, seq_len=2048)
    assert not estimate_memory(cfg, no_recompute).fits(80.0)


def test_zero_stages_reproduce_rajbhandari_figure_1():
    # ZeRO paper, figure 1: Ψ = 7.5B, N_d = 64, K = 12 -> 120, 31.4, 16.6 and 1.9 GB per GPU.
    for stage, expected in ((0, 120.0), (1, 31.4), (2, 16.6), (3, 1.9)):
        assert sum(model_state_bytes(7.5e9, 64, stage)) / 1e9 == pytest.approx(expected, abs=0.05)


def test_activation_bytes_follow_korthikanti_table_2_by_hand():
    # s=2, b=1, h=4, a=2: sbh = 8, 5as/h = 5.
    cfg = ModelConfig(n_layer=1, hidden=4, n_head=2, vocab_size=8, pad_vocab_multiple=8)
    lay = Layout(seq_len=2, micro_batch=1)
    assert activation_bytes_per_layer(cfg, lay, "none") == 8 * (34 + 5)
    assert activation_bytes_per_layer(cfg, Layout(tp=2, seq_len=2), "none") == 8 * (10 + 12 + 2.5)
    sp = Layout(tp=2, seq_len=2, sequence_parallel=True)
    assert activation_bytes_per_layer(cfg, sp, "none") == 8 * 39 / 2
    assert activation_bytes_per_layer(cfg, sp, "selective") == 8 * 34 / 2
    assert activation_bytes_per_layer(cfg, Layout(tp=2, seq_len=2), "selective") == 8 * 22
    assert activation_bytes_per_layer(cfg, lay, "full") == 2 * 8


def test_chinchilla_compute_and_optimal_allocation():
    # Hoffmann et al. 2022: Chinchilla, 70B parameters on 1.4T tokens, Gopher's 5.76e23 FLOPs.
    assert approx_train_flops(70e9, 1.4e12) == pytest.approx(5.76e23, rel=0.03)
    n, d = chinchilla_rule(5.76e23)
    assert n == pytest.approx(70e9, rel=0.02) and d / n == pytest.approx(20)
    # Epoch AI's refit of Approach 3 puts the optimum for that budget near Chinchilla itself.
    n, d = PUBLISHED["epoch"].optimal(5.76e23)
    assert n == pytest.approx(70e9, rel=0.1)
    assert 6 * n * d == pytest.approx(5.76e23)
    # Hoffmann's rounded Approach 3 numbers favour smaller models (Besiroglu et al. 2024).
    n_h, _ = PUBLISHED["hoffmann"].optimal(5.76e23)
    assert 20e9 < n_h < n


@pytest.mark.parametrize("name", ["hoffmann", "epoch"])
def test_closed_form_optimum_is_the_minimum_along_the_iso_flop_line(name):
    law, c = PUBLISHED[name], 1e22
    n_opt, _ = law.optimal(c)
    grid = [10 ** (7 + i / 2000) for i in range(10001)]  # 1e7 .. 1e12
    n_best = min(grid, key=lambda n: law.loss(n, c / (6 * n)))
    assert n_opt == pytest.approx(n_best, rel=2e-3)


def test_megatron_formula_and_published_training_times():
    # Narayanan et al. 2021, eq. 3 by hand for GPT-3 175B (l=96, h=12288, V=51200, s=2048).
    cfg, batch, s = gpt(96, 12288, 96), 1536, 2048
    by_hand = 96 * batch * s * 96 * 12288**2 * (1 + s / (6 * 12288) + 51200 / (16 * 96 * 12288))
    assert megatron_flops_per_iteration(cfg, batch, s) == pytest.approx(by_hand, rel=1e-12)
    assert by_hand == pytest.approx(4.511e18, rel=1e-3)
    # Section 5.1 (eq. 4): GPT-3 on 300B tokens, 1024 A100s at 140 TFLOPs -> 34 days;
    # the 1T model on 450B tokens, 3072 GPUs at 163 TFLOPs -> 84 days.
    full = Layout(recompute="full", tp=8, pp=16)
    plan = plan_model(cfg, 300e9, A100, gpus=1024, tflops=140.0, layout=full)
    assert plan["days"] == pytest.approx(34, rel=0.05)
    one_t = gpt(128, 25600, 128)
    plan = plan_model(
        one_t, 450e9, A100, gpus=3072, tflops=163.0, layout=Layout(recompute="full", tp=8, pp=64)
    )
    assert plan["days"] == pytest.approx(84, rel=0.05)


def test_budget_compute_is_gpus_times_time_times_tflops():
    plan = plan_budget(
        A100, 384 * 111 * 24, gpus=384, tflops=150.0, recompute=True, layout=BLOOM_LAYOUT
    )
    c = 384 * 111 * 86400 * 150e12
    assert plan["compute_hardware_flops"] == pytest.approx(c)
    assert plan["compute_model_flops"] == pytest.approx(0.75 * c)  # 6ND of 8ND
    assert plan["days"] == pytest.approx(111)
    assert plan["optimal"]["params"] == pytest.approx(math.sqrt(0.75 * c / 120))
    assert plan["shapes"], "no candidate shape for the BLOOM budget"


def test_candidate_shapes_respect_parallel_constraints():
    shapes = candidate_shapes(7e9, tp=4, pp=2, vocab_size=250680)
    assert len(shapes) >= 3
    for cfg in shapes:
        assert cfg.n_layer % 2 == 0 and cfg.n_head % 4 == 0 and cfg.hidden % cfg.n_head == 0
        assert 64 <= cfg.head_dim <= 128
        assert cfg.padded_vocab_size % (128 * 4) == 0
        assert count_params(cfg).total == pytest.approx(7e9, rel=0.1)


def test_gpu_table_has_datasheet_values_and_sources():
    for name in (
        "v100",
        "a100-40gb",
        "a100-80gb",
        "h100-sxm",
        "h100-pcie",
        "h200",
        "l4",
        "mi250x",
        "mi300x",
        "cpu",
    ):
        g = GPUS[name]
        assert g.peak_tflops > 0 and g.memory_gib > 0 and g.tdp_w > 0 and g.source
    assert (A100.peak_tflops, A100.memory_gib, A100.tdp_w) == (312.0, 80.0, 400.0)
    h100 = GPUS["h100-sxm"]
    assert (h100.peak_tflops, h100.memory_gib, h100.tdp_w) == (989.0, 80.0, 700.0)


def test_cli_plan_json_and_errors(capsys):
    argv = [
        "plan",
        "--model",
        "bloom-176b",
        "--tokens",
        "366e9",
        "--gpus",
        "384",
        "--gpu",
        "a100-80gb",
        "--tp",
        "4",
        "--pp",
        "12",
        "--zero",
        "1",
        "--micro-batch",
        "2",
        "--recompute",
        "--achieved-tflops",
        "150",
        "--country",
        "FRA",
        "--json",
    ]
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["shapes"][0]["fits"] is True
    assert plan["co2_tonnes"] == pytest.approx(plan["energy"]["energy_mwh"] * 57 / 1000)
    assert main(["plan", "--gpus", "10", "--days", "1", "--tp", "4"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["plan", "--gpu-hours", "1e5", "--gpu", "a100-80"]) == 2
    assert "a100-80gb" in capsys.readouterr().err
    assert main(["plan", "--gpu-hours", "1e6", "--gpu", "h100-sxm", "--optimal", "chinchilla"]) == 0
    assert "compute-optimal" in capsys.readouterr().out


def test_device_names_map_to_the_gpu_table():
    from bloomforge.hardware import gpu_from_device_name

    assert gpu_from_device_name("NVIDIA H100 80GB HBM3").name == "h100-sxm"
    assert gpu_from_device_name("NVIDIA H100 PCIe").name == "h100-pcie"
    assert gpu_from_device_name("NVIDIA H200").name == "h200"
    assert gpu_from_device_name("NVIDIA A100-SXM4-40GB").name == "a100-40gb"
    assert gpu_from_device_name("NVIDIA A100-SXM4-80GB").name == "a100-80gb"
    assert gpu_from_device_name("NVIDIA L4").name == "l4"
    assert gpu_from_device_name("NVIDIA GeForce RTX 4090") is None
