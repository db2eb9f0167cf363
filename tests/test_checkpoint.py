"""Checkpoints: round trip with the resolved recipe, atomic replacement, bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bloomforge.checkpoint import load_checkpoint, save_checkpoint
from bloomforge.errors import BloomforgeError
from bloomforge.model import BloomLM, ModelConfig
from bloomforge.recipe import Recipe, load_recipe
from bloomforge.typed_config import load_yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def saved(tmp_path):
    recipe = load_recipe(None, ["model=micro", "model.position=rotary", "train.lr=3e-4"])
    model = BloomLM.build(recipe.model, seed=0)
    save_checkpoint(tmp_path / "ckpt", model, recipe, meta={"step": 7})
    return tmp_path / "ckpt", model, recipe


def test_round_trip_keeps_weights_and_resolved_recipe(saved):
    path, model, recipe = saved
    ckpt = load_checkpoint(path)
    assert ckpt.recipe == recipe and ckpt.meta["step"] == 7
    assert load_yaml(path / "config.yaml")["model"]["n_layer"] == 2  # resolved, not "preset: micro"
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), ckpt.model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2)
    ids = torch.randint(0, 512, (2, 9))
    torch.testing.assert_close(ckpt.model(ids), model(ids))


def test_failed_save_keeps_previous_checkpoint(saved, monkeypatch):
    path, _model, recipe = saved
    before = (path / "model.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("bloomforge.checkpoint.folder.save_recipe", broken)
    with pytest.raises(OSError):
        save_checkpoint(path, BloomLM.build(recipe.model, seed=1), recipe)
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # no temp folders left


def _forget_checksums(path):
    """A checkpoint folder made by hand or by an older version: no recorded checksums."""
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("files")
    (path / "meta.json").write_text(json.dumps(meta))


def test_truncated_weights_are_named(saved):
    path, *_ = saved
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BloomforgeError, match=r"model\.safetensors: checksum mismatch"):
        load_checkpoint(path)
    _forget_checksums(path)  # without checksums the reader still names the file
    with pytest.raises(BloomforgeError, match=r"model\.safetensors: unreadable weights"):
        load_checkpoint(path)


def test_nan_weights_are_refused(tmp_path):
    cfg = ModelConfig(n_layer=1, hidden=16, n_head=2, vocab_size=32)
    model = BloomLM.build(cfg, seed=0)
    save_checkpoint(tmp_path / "c", model, Recipe(model=cfg))
    with torch.no_grad():
        model.layers["0"].mlp.up.weight[0, 0] = float("nan")
    nan_name = r"'layers\.0\.mlp\.up\.weight' contains NaN"
    with pytest.raises(BloomforgeError, match="refusing to save: .*" + nan_name):
        save_checkpoint(tmp_path / "c", model, Recipe(model=cfg))
    load_checkpoint(tmp_path / "c")  # the good checkpoint is still there
    # NaN weights written some other way (no checksum to catch them) are refused on load
    save_file(model.state_dict(), tmp_path / "c" / "model.safetensors")
    _forget_checksums(tmp_path / "c")
    with pytest.raises(BloomforgeError, match=nan_name):
        load_checkpoint(tmp_path / "c")


def test_config_that_does_not_match_weights(saved):
    path, *_ = saved
    _forget_checksums(path)  # edited by hand: with its checksum a changed file is refused
    text = (path / "config.yaml").read_text().replace("hidden: 64", "hidden: 128")
    (path / "config.yaml").write_text(text)
    with pytest.raises(BloomforgeError, match="has shape"):
        load_checkpoint(path)


def test_misspelled_key_in_checkpoint_config(saved):
    path, *_ = saved
    _forget_checksums(path)
    (path / "config.yaml").write_text(
        (path / "config.yaml").read_text().replace("n_head:", "n_heads:")
    )
    with pytest.raises(BloomforgeError, match=r"config\.yaml: unknown key 'model\.n_heads'"):
        load_checkpoint(path)


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(recipe):
    r = load_recipe(recipe)
    if "prepare:\n  sources:" in recipe.read_text():  # a whole-pipeline recipe (`bloomforge run`)
        assert r.model.preset is not None and r.model.n_layer > 0
        assert r.prepare.sources
        return
    if recipe.name.startswith("bloomz-"):  # finetuning: the model's shape comes from init=
        assert r.model.preset is None and r.train.norm_target_loss and r.init is None
        return
    assert r.model.preset is not None and r.model.n_layer > 0


def test_recipe_overrides_and_presets():
    r = load_recipe(RECIPES / "tiny.yaml", ["model.n_layer=2", "train.lr=3e-4", "parallel.tp=2"])
    assert (r.model.n_layer, r.model.hidden, r.train.lr, r.parallel.tp) == (2, 128, 3e-4, 2)
    assert r.train.warmup_tokens == 200_000  # from the file, written as an integer


def test_corrupt_meta_is_named(saved):
    path, *_ = saved
    (path / "meta.json").write_text('{"step": 7,,}')
    with pytest.raises(BloomforgeError, match=r"meta\.json line 1: not valid JSON"):
        load_checkpoint(path)
