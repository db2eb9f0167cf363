"""The import layers of src/bloomforge (docs/ARCHITECTURE.md): a package imports only packages
below it, at module level or inside a function, so there is no import cycle between packages.
The CLI modules (`*/commands.py`, `cli.py`) sit on top and may import any stage."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bloomforge"

# Lowest first; one list per layer (packages of one layer do not import each other).
LAYERS: list[list[str]] = [
    ["errors", "files", "log"],
    ["typed_config", "devices", "outputs", "tables", "hardware"],
    ["documents", "model"],
    ["tokenizer", "parallel", "recipe"],
    ["checkpoint"],
    ["data", "interop"],
    ["mtf"],
    ["evaluation"],
    ["training"],
    ["science", "serve"],
    ["pipeline"],
    ["cli", "__init__"],
    ["__main__"],
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
CLI = RANK["cli"]
CONFIG = RANK["model"] + 0.5  # the recipe's section config modules (see below)
SECTIONS = {
    f"bloomforge.{m}.config"
    for m in (
        "model",
        "parallel",
        "tokenizer",
        "data",
        "data.prepare",
        "evaluation",
        "training",
        "mtf",
        "interop",
        "pipeline",
    )
}


def _module(path: Path) -> str:
    return ".".join(("bloomforge", *path.relative_to(SRC).with_suffix("").parts))


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """Every bloomforge package this file imports, whether it is a section config module, and
    the line."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "bloomforge":
                names = [f"bloomforge.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "bloomforge" and len(parts) > 1:
                out.append((parts[1], name in SECTIONS, node.lineno))
    return out


def test_every_package_has_a_layer():
    packages = {_package(p) for p in SRC.rglob("*.py")}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def _rank(path: Path) -> float:
    if path.name == "commands.py":
        return CLI
    if _module(path) in SECTIONS:
        return CONFIG
    return RANK[_package(path)]


def test_no_package_imports_one_above_it():
    """Section configs (SECTIONS: typed dataclasses the recipe assembles) are
    leaves between layers 2 and 3: they import only layers 0-2 and other section configs, and
    any layer from 3 up may import them."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        pkg, mine = _package(path), _rank(path)
        for target, is_config, line in _imports(path):
            rank = CONFIG if is_config else RANK.get(target, CLI)
            ok = (rank < CONFIG or is_config) if mine == CONFIG else (target == pkg or rank < mine)
            if not ok:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports bloomforge.{target}")
    assert not wrong, "\n".join(wrong)


def test_section_configs_are_leaves():
    """Every section type of the recipe comes from a section config module (or the recipe)."""
    import dataclasses

    from bloomforge.recipe import Recipe

    for f in dataclasses.fields(Recipe):
        for tp in typing.get_args(typing.get_type_hints(Recipe)[f.name]) or [
            typing.get_type_hints(Recipe)[f.name]
        ]:
            if dataclasses.is_dataclass(tp):
                assert tp.__module__ in SECTIONS, (f.name, tp.__module__)
