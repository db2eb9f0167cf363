"""`bloomforge ablate`: grid expansion, runs equal direct training, reruns skip, extrapolation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bloomforge.cli import main
from bloomforge.errors import BloomforgeError
from bloomforge.recipe import load_recipe
from bloomforge.science.ablate import load_grid, run_grid
from bloomforge.science.ablate_report import write_report
from bloomforge.training.loop import Trainer
from token_data import corpus_lines, write_token_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    # Enough held-out text per group (5%) for a few 4 x 32 token windows.
    write_token_folder(
        out, {("ud", "fr"): corpus_lines("fr", 600), ("wp", "en"): corpus_lines("en", 600)}
    )
    return out


def _shared(tokens: Path) -> dict[str, object]:
    return {
        "model": "micro",
        "model.max_seq_len": 32,  # learned positions end at the training length
        "data.tokens": str(tokens),
        "data.seq_len": 32,
        "train.global_batch_size": 4,
        "train.micro_batch_size": 4,
        "train.lr": 3e-3,
        "train.min_lr": 3e-4,
        "train.warmup_tokens": 256,
        "train.decay_tokens": 512,
        "train.max_tokens": 512,  # 4 steps of 4 x 32 tokens
        "train.precision": "fp32",
        "train.save_every": 2,
        "train.eval_samples": 4,
    }


def _write_grid(path: Path, tokens: Path, vary: dict, **extra) -> Path:
    import yaml

    grid = {
        "base": str(REPO / "recipes" / "tiny.yaml"),
        "overrides": [f"{k}={v}" for k, v in _shared(tokens).items()],
        "vary": vary,
        "eval": {"extrapolation": [1, 2, 4], "samples": 8, "batch_size": 4},
        **extra,
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def ablation(tokens, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    grid_file = _write_grid(root / "grid.yaml", tokens, {"model.position": ["alibi", "learned"]})
    out = root / "out"
    grid = load_grid(grid_file, out)
    results = run_grid(grid)
    write_report(grid, results, out)
    return grid_file, out, results


def test_grid_expands_to_the_cartesian_product(tokens, tmp_path):
    grid_file = _write_grid(
        tmp_path / "g.yaml",
        tokens,
        {"model.mlp": ["gelu", "swiglu"], "model.embedding_layernorm": [True, False]},
    )
    grid = load_grid(grid_file, tmp_path / "out")
    names = [v.name for v in grid.variants]
    assert names == [
        "mlp=gelu,embedding_layernorm=true",
        "mlp=gelu,embedding_layernorm=false",
        "mlp=swiglu,embedding_layernorm=true",
        "mlp=swiglu,embedding_layernorm=false",
    ]
    v = grid.variants[3]
    assert (v.recipe.model.mlp, v.recipe.model.embedding_layernorm) == ("swiglu", False)
    # Shared overrides on top of the base recipe, the rest from tiny.yaml.
    assert v.recipe.model.n_layer == 2 and v.recipe.train.max_tokens == 512
    assert v.recipe.train.save_every == 2 and v.recipe.train.min_lr == 3e-4
    assert v.run == tmp_path / "out" / "runs" / "mlp=swiglu,embedding_layernorm=false"


def test_inline_base_recipe(tokens, tmp_path):
    grid_file = _write_grid(tmp_path / "g.yaml", tokens, {"model.position": ["none", "rotary"]})
    import yaml

    data = yaml.safe_load(grid_file.read_text())
    data["base"] = {"model": {"preset": "micro"}, "seed": 7}
    grid_file.write_text(yaml.safe_dump(data, sort_keys=False))
    grid = load_grid(grid_file, tmp_path / "out")
    assert [v.recipe.model.position for v in grid.variants] == ["none", "rotary"]
    assert all(v.recipe.seed == 7 for v in grid.variants)


def test_final_weights_equal_direct_training(ablation, tokens, tmp_path):
    _, out, _ = ablation
    for position in ("alibi", "learned"):
        overrides = [f"{k}={v}" for k, v in _shared(tokens).items()]
        overrides += [f"model.position={position}", f"out={tmp_path / position}"]
        recipe = load_recipe(REPO / "recipes" / "tiny.yaml", overrides)
        Trainer(recipe).fit()
        ours = load_file(
            out
            / "runs"
            / f"position={position}"
            / "checkpoints"
            / "step_00000004"
            / "model.safetensors"
        )
        ref = load_file(tmp_path / position / "checkpoints" / "step_00000004" / "model.safetensors")
        assert ours.keys() == ref.keys()
        for name in ref:
            assert torch.equal(ours[name], ref[name]), name


def test_extrapolation_alibi_finite_learned_na(ablation):
    _, _, results = ablation
    by = {r["name"]: r for r in results}
    alibi, learned = by["position=alibi"], by["position=learned"]
    for k in ("1", "2", "4"):
        assert math.isfinite(alibi["extrapolation"][k]["mean"])
    assert alibi["extrapolation"]["2"]["length"] == 64
    assert math.isfinite(learned["extrapolation"]["1"]["mean"])
    assert learned["extrapolation"]["2"]["mean"] is None
    assert "learned positions end at 32" in learned["extrapolation"]["2"]["note"]
    # 1x equals the per-group validation loss, and the mean is the mean of the groups.
    groups = alibi["valid"]["groups"]
    assert sorted(groups) == ["ud", "wp"]
    assert alibi["valid"]["mean"] == pytest.approx(sum(groups.values()) / len(groups))


def test_extrapolation_loss_matches_a_hand_computed_cross_entropy(ablation, tokens):
    """Reference: the model's logits + torch's cross_entropy over the same held-out windows."""
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.data.loader import MixtureLoader

    _, out, results = ablation
    alibi = next(r for r in results if r["name"] == "position=alibi")
    ckpt = load_checkpoint(out / "runs" / "position=alibi")
    ckpt.model.eval()
    loader = MixtureLoader(tokens, 64, seed=ckpt.recipe.seed)
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader.validation_batches("ud", 4, 8 // 2):
            logits = ckpt.model(batch[:, :-1]).float()
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(ce)
            n += batch[:, 1:].numel()
    assert alibi["extrapolation"]["2"]["groups"]["ud"] == pytest.approx(total / n, rel=1e-5)


def test_rerun_skips_finished_variants(ablation, capsys):
    grid_file, out, results = ablation
    ckpt = out / "runs" / "position=alibi" / "checkpoints" / "step_00000004" / "model.safetensors"
    before = ckpt.stat().st_mtime_ns
    assert main(["ablate", str(grid_file), "--out", str(out)]) == 2  # no --resume: refuses
    assert "--resume" in capsys.readouterr().err
    assert main(["ablate", str(grid_file), "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "position=alibi" in printed and "position=learned" in printed
    assert ckpt.stat().st_mtime_ns == before
    rerun = json.loads((out / "results.json").read_text())["variants"]
    assert all(r["train"]["reused"] for r in rerun)
    assert [r["valid"]["mean"] for r in rerun] == [r["valid"]["mean"] for r in results]


def test_interrupted_variant_resumes(tokens, tmp_path):
    grid_file = _write_grid(tmp_path / "g.yaml", tokens, {"model.position": ["alibi"]})
    out = tmp_path / "out"
    grid = load_grid(grid_file, out)
    # Simulate an interruption after step 2: a run folder with a checkpoint, no finish marker.
    half = [f"{k}={v}" for k, v in _shared(tokens).items()] + [
        f"out={out / 'runs' / 'position=alibi'}",
        "train.max_tokens=256",
    ]
    Trainer(load_recipe(REPO / "recipes" / "tiny.yaml", half)).fit()
    results = run_grid(grid)
    assert results[0]["train"]["step"] == 4 and not results[0]["train"]["reused"]
    ref = tmp_path / "ref"
    full = [f"{k}={v}" for k, v in _shared(tokens).items()] + [f"out={ref}"]
    Trainer(load_recipe(REPO / "recipes" / "tiny.yaml", full)).fit()
    name = "checkpoints/step_00000004/model.safetensors"
    ours, theirs = load_file(out / "runs" / "position=alibi" / name), load_file(ref / name)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize(
    ("vary", "message"),
    [
        ({"model.postion": ["alibi"]}, "model.postion"),
        ({"model.position": ["alibi", "sideways"]}, "position=sideways"),
        ({"trian.lr": [1e-3]}, "trian"),
    ],
)
def test_bad_key_is_a_one_line_error(tokens, tmp_path, capsys, vary, message):
    grid_file = _write_grid(tmp_path / "g.yaml", tokens, vary)
    with pytest.raises(BloomforgeError, match=message):
        load_grid(grid_file, tmp_path / "out")
    assert main(["ablate", str(grid_file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bloomforge:") and "\n" not in err and message in err
    assert not (tmp_path / "out").exists()  # nothing trained


def test_unknown_grid_key(tokens, tmp_path):
    grid_file = _write_grid(tmp_path / "g.yaml", tokens, {"model.position": ["alibi"]}, vari={})
    with pytest.raises(BloomforgeError, match="unknown key 'vari'"):
        load_grid(grid_file, tmp_path / "out")


def test_report_files_one_row_per_variant(ablation):
    _, out, _ = ablation
    for name in (
        "report.md",
        "results.csv",
        "results.json",
        "loss_curves.png",
        "extrapolation.png",
    ):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["variant"] for r in rows] == ["position=alibi", "position=learned"]
    assert rows[1]["loss @2x (64)"] == "n/a" and rows[0]["loss @2x (64)"] != "n/a"
    table = [x for x in (out / "report.md").read_text().splitlines() if x.startswith("| pos")]
    assert len(table) == 2
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_grids_validate(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # grids name recipes/ and ablations/ relative to the repository root
    grids = sorted((REPO / "grids").glob("*.yaml"))
    assert [g.stem for g in grids] == ["activations", "embed-norm", "positions"]
    for grid in grids:
        loaded = load_grid(grid, tmp_path / grid.stem)
        assert len(loaded.variants) >= 2, grid


def test_parallel_workers_give_the_same_runs(ablation, tmp_path):
    """Two spawned workers (one thread each) train bit for bit what one process does with one
    thread; the thread count itself changes CPU summation order, so it is held equal."""
    grid_file, _, results = ablation
    grid = load_grid(grid_file, tmp_path / "par")
    parallel = run_grid(grid, workers=2)
    assert [r["name"] for r in parallel] == [r["name"] for r in results]
    serial = load_grid(grid_file, tmp_path / "ser")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(serial)
    finally:
        torch.set_num_threads(threads)
    name = "checkpoints/step_00000004/model.safetensors"
    for a, b in zip(grid.variants, serial.variants, strict=True):
        ours, ref = load_file(a.run / name), load_file(b.run / name)
        assert all(torch.equal(ours[k], ref[k]) for k in ref), a.name
