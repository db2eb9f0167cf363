from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from bloomforge.typed_config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    load_yaml,
    parse_overrides,
    save_yaml,
    to_dict,
)

PRESETS = {"small": {"n_layer": 4, "hidden": 128, "n_head": 8}}


@dataclass
class Model:
    preset: str | None = None
    n_layer: int = 2
    hidden: int = 64
    n_head: int = 4

    def __post_init__(self) -> None:
        if self.hidden % self.n_head:
            raise ValueError(f"hidden {self.hidden} is not divisible by n_head {self.n_head}")

    @classmethod
    def resolve_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        name = data.get("preset")
        if name is None:
            return data
        if name not in PRESETS:
            raise ValueError(f"key 'preset': unknown preset '{name}'")
        return {**PRESETS[name], **data}


@dataclass
class Train:
    lr: float = 3e-4
    steps: int = 10
    precision: Literal["fp32", "bf16"] = "bf16"
    betas: tuple[float, ...] = (0.9, 0.95)
    name: str | None = None
    compile: bool = False


@dataclass
class Data:
    path: str
    weights: list[float] = field(default_factory=lambda: [1.0])


@dataclass
class Mixed:
    v: int | str = 0
    xs: list[int] | None = None


@dataclass
class Recipe:
    model: Model
    train: Train = field(default_factory=Train)
    data: Data | None = None
    tags: dict[str, int] = field(default_factory=dict)
    seed: int = 0


def err(cls: type, data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data)
    return str(info.value)


# --- from_dict: keys -------------------------------------------------------------------------


def test_nested_build_and_defaults() -> None:
    r = from_dict(Recipe, {"model": {"n_layer": 3}, "train": {"steps": 7}, "seed": 1})
    assert r == Recipe(model=Model(n_layer=3), train=Train(steps=7), seed=1)
    assert isinstance(r.train.betas, tuple)


def test_unknown_key_suggests_nearest_with_dotted_path() -> None:
    msg = err(Recipe, {"model": {}, "train": {"lrr": 0.1}})
    assert msg == "unknown key 'train.lrr' (did you mean 'train.lr'?)"
    assert err(Recipe, {"model": {}, "sed": 1}) == "unknown key 'sed' (did you mean 'seed'?)"


def test_unknown_key_without_near_match_lists_valid_keys() -> None:
    msg = err(Recipe, {"model": {}, "train": {"zzz": 1}})
    assert msg == "unknown key 'train.zzz' (valid keys: lr, steps, precision, betas, name, compile)"


def test_missing_required_keys() -> None:
    assert err(Recipe, {}) == "missing key 'model'"
    assert err(Recipe, {"model": {}, "data": {}}) == "missing key 'data.path'"
    assert from_dict(Recipe, {"model": {}, "data": {"path": "x"}}).data == Data("x")


def test_empty_section_takes_defaults() -> None:
    # `model:` with everything commented out is None in YAML.
    assert from_dict(Recipe, yaml.safe_load("model:\n")).model == Model()
    assert from_dict(Train, None) == Train()


# --- from_dict: types and coercions --------------------------------------------------------------


def test_wrong_type_names_key_and_expected_type() -> None:
    msg = err(Recipe, {"model": {}, "train": {"lr": "abc"}})
    assert msg == "key 'train.lr': expected float, got str 'abc'"
    assert err(Train, {"steps": [1]}) == "key 'steps': expected int, got list [1]"


def test_literal_error_lists_choices() -> None:
    msg = err(Train, {"precision": "fp16"})
    assert msg == "key 'precision': expected one of 'fp32', 'bf16', got str 'fp16'"
    assert from_dict(Train, {"precision": "fp32"}).precision == "fp32"


def test_optional() -> None:
    assert from_dict(Train, {"name": None}).name is None
    assert from_dict(Train, {"name": "run1"}).name == "run1"
    assert err(Train, {"name": 3}) == "key 'name': expected str or null, got int 3"
    assert err(Recipe, {"model": {}, "data": 5}) == (
        "key 'data': expected mapping or null, got int 5"
    )


def test_yaml_exponent_string_coerces_to_float() -> None:
    raw = yaml.safe_load("lr: 3e-4\n")
    assert raw["lr"] == "3e-4"  # PyYAML's YAML 1.1 float needs a dot
    lr = from_dict(Train, raw).lr
    assert isinstance(lr, float) and lr == 3e-4
    assert from_dict(Train, {"lr": 1}).lr == 1.0 and isinstance(
        from_dict(Train, {"lr": 1}).lr, float
    )


def test_int_from_integral_float_or_string() -> None:
    for value in ("2e6", 2e6, "2000000", 2000000.0):
        steps = from_dict(Train, {"steps": value}).steps
        assert steps == 2_000_000 and type(steps) is int


def test_big_int_string_is_exact() -> None:
    assert from_dict(Train, {"steps": "9007199254740993"}).steps == 9007199254740993


def test_union_prefers_exact_type_and_reports_nested_errors() -> None:
    assert from_dict(Mixed, {"v": "3"}).v == "3"
    assert from_dict(Mixed, {"v": 3}).v == 3
    assert err(Mixed, {"v": 1.5}) == "key 'v': expected int or str, got float 1.5"
    assert err(Mixed, {"xs": 5}) == "key 'xs': expected list of int or null, got int 5"
    assert err(Mixed, {"xs": [1, "x"]}) == "key 'xs[1]': expected int, got str 'x'"


def test_non_integral_float_is_not_an_int() -> None:
    assert err(Train, {"steps": 2.5}) == "key 'steps': expected int, got float 2.5"
    assert err(Train, {"steps": "2.5"}) == "key 'steps': expected int, got str '2.5'"
    assert err(Train, {"steps": "ten"}) == "key 'steps': expected int, got str 'ten'"


def test_bool_and_int_are_not_interchangeable() -> None:
    assert err(Train, {"steps": True}) == "key 'steps': expected int, got bool True"
    assert err(Train, {"lr": False}) == "key 'lr': expected float, got bool False"
    assert err(Train, {"compile": 1}) == "key 'compile': expected bool, got int 1"
    assert err(Train, {"compile": "maybe"}) == "key 'compile': expected bool, got str 'maybe'"


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("Yes", True), ("FALSE", False), ("no", False)]
)
def test_bool_strings(text: str, expected: bool) -> None:
    assert from_dict(Train, {"compile": text}).compile is expected


def test_lists_and_tuples() -> None:
    assert from_dict(Train, {"betas": [1, "0.5"]}).betas == (1.0, 0.5)
    assert err(Train, {"betas": 0.9}) == "key 'betas': expected list of float, got float 0.9"
    assert err(Train, {"betas": [0.9, "x"]}) == "key 'betas[1]': expected float, got str 'x'"
    data = {"model": {}, "data": {"path": "p", "weights": [1, "x"]}}
    assert err(Recipe, data) == "key 'data.weights[1]': expected float, got str 'x'"


def test_dict_values_are_checked() -> None:
    assert from_dict(Recipe, {"model": {}, "tags": {"a": 1}}).tags == {"a": 1}
    msg = err(Recipe, {"model": {}, "tags": {"a": "x"}})
    assert msg == "key 'tags.a': expected int, got str 'x'"
    assert err(Recipe, {"model": {}, "tags": [1]}) == "key 'tags': expected mapping, got list [1]"


def test_section_given_as_scalar_without_presets_is_an_error() -> None:
    msg = err(Recipe, {"model": {}, "train": "fast"})
    assert msg == "key 'train': expected mapping, got str 'fast'"


def test_top_level_must_be_mapping() -> None:
    assert err(Train, [1]) == "config: expected mapping, got list [1]"


# --- presets and validation ------------------------------------------------------------------


def test_preset_merged_under_explicit_keys() -> None:
    model = from_dict(Recipe, {"model": {"preset": "small", "n_layer": 2}}).model
    assert model == Model(preset="small", n_layer=2, hidden=128, n_head=8)


def test_preset_as_section_string() -> None:
    assert from_dict(Recipe, {"model": "small"}).model == Model("small", 4, 128, 8)


def test_resolve_input_error_gets_section_path() -> None:
    assert err(Recipe, {"model": "big"}) == "key 'model.preset': unknown preset 'big'"
    assert err(Model, {"preset": "big"}) == "key 'preset': unknown preset 'big'"


def test_post_init_value_error_names_section() -> None:
    msg = err(Recipe, {"model": {"hidden": 100, "n_head": 3}})
    assert msg == "model: hidden 100 is not divisible by n_head 3"
    assert err(Model, {"hidden": 100, "n_head": 3}) == "hidden 100 is not divisible by n_head 3"


def test_config_error_subclasses_value_error() -> None:
    with pytest.raises(ValueError):
        from_dict(Train, {"lr": "abc"})


# --- overrides -------------------------------------------------------------------------------


def test_parse_overrides_yaml_values() -> None:
    got = parse_overrides(["a.b=true", "n=3", "xs=[1, 2]", "z=null", "s=[1,", "t=#x", "k = v"])
    assert got == {"a.b": True, "n": 3, "xs": [1, 2], "z": None, "s": "[1,", "t": "#x", "k": "v"}
    assert parse_overrides(["lr=1e-3", "lr=2"]) == {"lr": 2}


@pytest.mark.parametrize("item", ["train.lr", "=3", "a..b=1", ".a=1"])
def test_bad_override(item: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_overrides([item])
    assert str(info.value) == f"override '{item}': expected key=value"


def test_apply_overrides_nested_and_copy() -> None:
    data = {"train": {"lr": 0.1}, "model": {"n_layer": 2}}
    out = apply_overrides(data, ["train.steps=5", "train.lr=0.2", "new.deep.key=x"])
    assert out == {
        "train": {"lr": 0.2, "steps": 5},
        "model": {"n_layer": 2},
        "new": {"deep": {"key": "x"}},
    }
    assert data == {"train": {"lr": 0.1}, "model": {"n_layer": 2}}  # input untouched


def test_apply_overrides_preset_string_becomes_section() -> None:
    out = apply_overrides({"model": "small"}, ["model.n_layer=2"])
    assert out == {"model": {"preset": "small", "n_layer": 2}}
    assert from_dict(Recipe, out).model == Model("small", 2, 128, 8)


def test_apply_overrides_in_order() -> None:
    out = apply_overrides({}, ["model.n_layer=3", "model=small", "model.hidden=256"])
    assert out == {"model": {"preset": "small", "hidden": 256}}


def test_override_into_scalar_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"override 'train\.lr\.x=1': 'train\.lr' is float"):
        apply_overrides({"train": {"lr": 0.1}}, ["train.lr.x=1"])


def test_load_config_unknown_override_names_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Recipe, None, ["model=small", "train.lrr=1"])
    assert str(info.value) == "unknown key 'train.lrr' (did you mean 'train.lr'?)"


# --- files -----------------------------------------------------------------------------------


def test_load_yaml_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value) == f"{path}: no such file"


def test_load_yaml_syntax_error_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: 2\nc: d: e\nf: 4\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(str(path))
    assert str(info.value) == f"{path} line 3: invalid YAML (mapping values are not allowed here)"


def test_load_yaml_top_level_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: top level must be a mapping"):
        load_yaml(path)
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_load_config_from_file_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: small\ntrain:\n  lr: 3e-4\n  betas: [0.8, 0.9]\n")
    r = load_config(Recipe, path, ["model.n_layer=1", "train.steps=2e3"])
    assert r.model == Model("small", 1, 128, 8)
    assert r.train == Train(lr=3e-4, steps=2000, betas=(0.8, 0.9))


def test_to_dict_plain_types() -> None:
    r = Recipe(model=Model(), data=Data("p"), tags={"a": 1})
    d = to_dict({"recipe": r, "out": Path("runs/x"), "pair": (1, 2)})
    assert d["out"] == "runs/x" and d["pair"] == [1, 2]
    assert d["recipe"]["train"]["betas"] == [0.9, 0.95]
    assert d["recipe"]["data"] == {"path": "p", "weights": [1.0]}
    assert json.loads(json.dumps(d)) == d


def test_save_yaml_round_trip_and_no_temp_files(tmp_path: Path) -> None:
    r = load_config(Recipe, None, ["model=small", "train.lr=1e-5", "data.path=corpus", "seed=7"])
    target = tmp_path / "sub" / "dir" / "recipe.yaml"
    save_yaml(r, target)
    assert load_config(Recipe, target) == r
    assert list(yaml.safe_load(target.read_text()))[:2] == ["model", "train"]  # field order
    save_yaml(r, target)  # overwrite in place
    assert os.listdir(target.parent) == ["recipe.yaml"]


def test_save_yaml_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    save_yaml({"a": 1}, target)
    with pytest.raises(yaml.YAMLError):
        save_yaml({"a": object()}, target)
    assert load_yaml(target) == {"a": 1}
    assert os.listdir(tmp_path) == ["c.yaml"]


def test_config_error_is_a_bloomforge_error_and_a_value_error():
    from bloomforge.errors import BloomforgeError
    from bloomforge.recipe import load_recipe
    from bloomforge.typed_config import ConfigError

    with pytest.raises(BloomforgeError, match=r"unknown key 'train\.lrr'") as e:
        load_recipe(None, ["train.lrr=1"])
    assert isinstance(e.value, ConfigError) and isinstance(e.value, ValueError)
