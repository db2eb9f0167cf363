"""`pipeline.layout.RunLayout` names every file and folder of a `bloomforge run` folder: each
path a finished run (with multitask finetuning) leaves is one of its names, every name of a
file the run writes is there (no stale name), each stage's outputs are its names, and no other
pipeline module spells a run-file name itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bloomforge.pipeline.config import STAGES
from bloomforge.pipeline.layout import RunLayout
from test_pipeline_finetune import ft_run  # noqa: F401  (the finished run, a module fixture)

PIPELINE = Path(__file__).resolve().parents[1] / "src" / "bloomforge" / "pipeline"
# Folders whose every entry a run names; the others are laid out by one package (data/ by data
# prepare, hf/ by the export, tokens/ by data tokenize, xp3/ by mtf build, a training run's
# checkpoints/ and tb/) or hold one file per language or source (heldout/, corpus/).
NAMED_INSIDE = ("tokenizer", "train", "finetune", "eval", ".stages")
# Modules still spelling run-file names; each drops out when it uses RunLayout (strict: a
# module that no longer does fails here until it is removed from the list).
PENDING: dict[str, str] = {}


def _names(layout: RunLayout) -> set[Path]:
    marks = {p for s in STAGES for p in (layout.record(s), layout.started(s))}
    return layout.named() | marks


def test_every_path_of_a_finished_run_is_named(ft_run):  # noqa: F811
    _, run = ft_run
    layout = RunLayout(run)
    names = _names(layout)
    entries = [*run.iterdir()]
    entries += [p for d in NAMED_INSIDE if (run / d).is_dir() for p in (run / d).iterdir()]
    unnamed = [layout.rel(p) for p in entries if p not in names]
    assert not unnamed, unnamed
    # No stale name: all but the corpus and the data stage's ledger are there (this run starts
    # at the tokenizer, over documents written by hand); emissions.csv only with codecarbon.
    missing = {layout.rel(p) for p in layout.named() if not p.exists()}
    missing -= {"train/emissions.csv", "finetune/emissions.csv"}
    assert missing == {"corpus", "corpus/manifest.json", "data/stats.json"}


def test_stage_outputs_are_named(tmp_path):
    from bloomforge.pipeline.config import demo_recipe_data
    from bloomforge.pipeline.stages import pipeline_stages
    from bloomforge.recipe import Recipe
    from bloomforge.typed_config import from_dict

    layout = RunLayout(tmp_path)
    recipe = from_dict(Recipe, demo_recipe_data(small=True) | {"mtf": {}, "finetune": {}})
    stages = pipeline_stages(recipe)  # every stage: the demo's corpus, mtf and finetune
    assert [s.name for s in stages] == list(STAGES)
    outputs = [tmp_path / o for s in stages for o in s.outputs]
    assert [layout.rel(p) for p in outputs if p not in layout.named()] == []


def _spelled(path: Path, names: set[str]) -> list[str]:
    """Path joins with a run-file or folder name (`run / "train"`, `folder / f"{x}.json"`) and
    other string constants that are run-file names (not docstrings, not text naming a file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            if isinstance(right, ast.JoinedStr) or (
                isinstance(right, ast.Constant) and right.value in names
            ):
                found.append(f"{path.name}:{node.lineno}: / {ast.unparse(node.right)}")
        elif isinstance(node, ast.Constant) and id(node) not in docstrings:
            # A file name (with a dot or a slash): a bare folder name is also a stage's name.
            value = node.value
            if isinstance(value, str) and value in names and ("." in value or "/" in value):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


@pytest.mark.parametrize(
    "module", sorted(p.name for p in PIPELINE.glob("*.py") if p.name != "layout.py")
)
def test_pipeline_modules_spell_no_run_file_name(module, request):
    if module in PENDING:
        request.applymarker(pytest.mark.xfail(reason=PENDING[module], strict=True))
    layout = RunLayout(Path("/run"))
    names = {n for p in _names(layout) for n in (p.name, layout.rel(p))}
    assert not _spelled(PIPELINE / module, names)
