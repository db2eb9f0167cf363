"""BLOOM presets and recipes against what tr11 ran, as docs/training.md "Fidelity to tr11" has it.

The doc's tables are the single list of expected values: each row quotes the tr11 text (a slurm
line of bigscience-workshop/bigscience, or a Megatron-DeepSpeed default) with its file and line,
and names the bloomforge key and value it becomes. Here every row's bloomforge value must (1)
follow from the quoted text by the unit rules (samples x seq_len = tokens, ...), (2) equal what the
recipe loads and, for shape and init, what the preset holds, and (3) where the two repositories
are mirrored on this machine, be quoted from the line the doc cites. Doc, recipes and presets
cannot drift apart without a failure here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from bloomforge.model.config import ModelConfig
from bloomforge.model.flops import count_params
from bloomforge.recipe import Recipe, load_recipe

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training.md"
README = REPO / "README.md"

# Parameter counts of the released checkpoints (the Hugging Face model cards of
# bigscience/bloom-560m ... bigscience/bloom; README.md "Presets" repeats them).
RELEASED_PARAMS = {
    "bloom-560m": 559_214_592,
    "bloom-1b1": 1_065_314_304,
    "bloom-1b7": 1_722_408_960,
    "bloom-3b": 3_002_557_440,
    "bloom-7b1": 7_069_016_064,
    "bloom-176b": 176_247_271_424,
}

# Keys whose value the preset itself must hold (the rest are recipe choices: the presets keep
# dropout 0.0, as transformers' BloomConfig does).
PRESET_KEYS = {
    "model.n_layer",
    "model.hidden",
    "model.n_head",
    "model.position",
    "model.embedding_layernorm",
    "model.padded_vocab_size",
    "model.init_std",
}
TOKEN_KEYS = {"train.warmup_tokens", "train.decay_tokens", "train.max_tokens"}

# The mirrors of the two source repositories, as `fetch` lays them out: ROOT/owner+name/repo.
MIRRORS = Path(os.environ.get("BLOOMFORGE_MIRRORS", "/work/.mirror"))


# -- the doc's tables ---------------------------------------------------------------------------
def _section() -> str:
    text = DOC.read_text()
    start = text.index("\n## Fidelity to tr11\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _rows(block: str) -> list[list[str]]:
    rows = []
    for line in block.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header


def _unquote(cell: str) -> str:
    return cell[1:-1] if cell.startswith("`") and cell.endswith("`") else cell


def _sources() -> dict[str, tuple[str, str, str | None]]:
    """Short name -> (repository, commit, path or None for the per-model `run`)."""
    legend = _section().split("\n### ", 1)[0]
    out = {}
    for name, repo, commit, path in _rows(legend):
        out[_unquote(name)] = (repo, commit, None if " " in path else path)
    return out


def _models() -> dict[str, dict]:
    """preset -> {"run": the tr11 run, "path": its slurm file, "rows": the table's rows}."""
    out = {}
    for block in _section().split("\n### ")[1:]:
        head = re.match(r"(bloom-\S+): (\S+)\n", block)
        if head is None:
            continue
        path = re.search(r"`run` = `([^`]+)`", block).group(1)
        rows = [
            (s, _unquote(t), src, _unquote(k), v)
            for s, t, src, k, v in _rows(block.split("\n\n", 2)[2])
        ]
        out[head.group(1)] = {"run": head.group(2), "path": path, "rows": rows}
    return out


MODELS = _models()


def _value(text: str):
    """A doc cell as a Python value: int (underscores allowed), float, bool, list, or string."""
    text = text.strip()
    if text.startswith("["):
        return [_value(x) for x in text[1:-1].split(",")]
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text.replace("_", ""))
        except ValueError:
            pass
    return text


def _numbers(text: str) -> list[float]:
    return [float(x.replace("_", "")) for x in re.findall(r"\d[\d_]*(?:\.\d+)?(?:e-?\d+)?", text)]


def _from_tr11(key: str, text: str, seq_len: int):
    """What bloomforge key `key` must be, derived from tr11's quoted text alone."""
    if key in TOKEN_KEYS:  # Megatron counted samples; bloomforge counts tokens
        (samples,) = _numbers(text.split("=", 1)[1])
        return int(samples) * seq_len
    if key == "train.rampup_batch_size":
        return [int(x) for x in _numbers(text)]
    if key == "train.precision":
        return {"--fp16": "fp16", "--bf16": "bf16"}[text]
    if re.fullmatch(r"--[\w-]+", text):  # a switch: on (--embed-layernorm, ...)
        return True
    if key in ("model.position", "train.schedule"):  # a word: --lr-decay-style cosine
        return text.split()[-1]
    if key == "data.valid_fraction":  # '"valid": "0.950:1.0"': the held-out document range
        lo, hi = _numbers(text)
        return hi - lo
    return _numbers(text)[-1]


# -- the recipes -------------------------------------------------------------------------------
def _load(preset: str) -> tuple[Recipe, dict]:
    path = REPO / "recipes" / f"{preset}.yaml"
    raw = yaml.safe_load(path.read_text())
    return load_recipe(path), raw


def _get(obj, key: str):
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


# -- tests -------------------------------------------------------------------------------------
def test_doc_has_a_table_for_every_bloom_preset():
    assert sorted(MODELS) == sorted(RELEASED_PARAMS)
    for preset, model in MODELS.items():
        assert (REPO / "recipes" / f"{preset}.yaml").is_file()
        keys = {row[3] for row in model["rows"]}
        for key in ("model.init_std", "train.lr", "train.min_lr", "train.precision", "seed"):
            assert key in keys, f"{preset}: no row for {key}"


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_doc_values_follow_from_the_tr11_text(preset):
    rows = MODELS[preset]["rows"]
    seq_len = next(_value(v) for _, _, _, k, v in rows if k == "data.seq_len")
    for setting, text, _, key, value in rows:
        if key == "—":
            continue
        expected = _from_tr11(key, text, seq_len)
        assert _value(value) == pytest.approx(expected), f"{preset} {setting}: {text} -> {key}"


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_recipe_and_preset_hold_the_doc_values(preset):
    recipe, raw = _load(preset)
    cfg = ModelConfig.from_name(preset)
    assert recipe.model.preset == preset
    for setting, _, _, key, value in MODELS[preset]["rows"]:
        if key == "—":
            continue
        want = _value(value)
        got = raw["train"]["precision"] if key == "train.precision" else _get(recipe, key)
        assert got == pytest.approx(want), f"{preset} {setting}: recipe {key} = {got!r}"
        if key in PRESET_KEYS:
            got = _get(cfg, key.removeprefix("model."))
            assert got == pytest.approx(want), f"{preset} {setting}: preset {key} = {got!r}"


def test_fp16_recipes_load():
    fp16 = [p for p, m in MODELS.items() if any(r[1] == "--fp16" for r in m["rows"])]
    assert fp16  # tr11's smaller runs were fp16
    for preset in fp16:
        assert load_recipe(REPO / "recipes" / f"{preset}.yaml").train.precision == "fp16"


@pytest.mark.parametrize(("preset", "expected"), RELEASED_PARAMS.items())
def test_preset_params_equal_the_released_checkpoints(preset, expected):
    assert count_params(ModelConfig.from_name(preset)).total == expected
    readme_row = re.search(rf"^\| {preset} \|.*\| ([\d,]+) \|$", README.read_text(), re.M)
    assert readme_row is not None and int(readme_row.group(1).replace(",", "")) == expected


def test_transformers_bloom_config_has_no_dropout():
    """The doc's claim on transformers' defaults (why a released config can say 0.0)."""
    from transformers import BloomConfig

    cfg = BloomConfig()
    assert (cfg.hidden_dropout, cfg.attention_dropout, cfg.initializer_range) == (0.0, 0.0, 0.02)


def _mirror(repository: str) -> Path | None:
    git_dir = MIRRORS / repository.replace("/", "+") / "repo"
    return git_dir if git_dir.is_dir() else None


def _show(git_dir: Path, commit: str, path: str) -> list[str] | None:
    try:
        out = subprocess.run(
            ["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.splitlines()


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_cited_lines_hold_the_quoted_text(preset):
    sources = _sources()
    checked = 0
    for setting, text, src, _, _ in MODELS[preset]["rows"]:
        name, line = src.split(":")
        repository, commit, path = sources[name]
        git_dir = _mirror(repository)
        if git_dir is None:
            continue
        lines = _show(git_dir, commit, path or MODELS[preset]["path"])
        if lines is None:
            continue
        assert text in lines[int(line) - 1], (
            f"{preset} {setting}: {src} is {lines[int(line) - 1]!r}"
        )
        checked += 1
    if not checked:
        pytest.skip(f"no mirror of the tr11 sources under {MIRRORS} (BLOOMFORGE_MIRRORS)")
