"""The import layers of src/bloomforge (docs/ARCHITECTURE.md): a package imports only packages
below it, at module level or inside a function, so there is no import cycle between packages.
The CLI modules (`*/commands.py`, `cli.py`) sit on top and may import any stage."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "bloomforge"

# Lowest first; one list per layer (packages of one layer do not import each other).
LAYERS: list[list[str]] = [
    ["errors", "files"],
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


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every bloomforge package this file imports, with the line."""
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
                out.append((parts[1], node.lineno))
    return out


def test_every_package_has_a_layer():
    packages = {_package(p) for p in SRC.rglob("*.py")}
    assert packages <= set(RANK), sorted(packages - set(RANK))


def test_no_package_imports_one_above_it():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        pkg = _package(path)
        mine = CLI if path.name == "commands.py" else RANK[pkg]
        for target, line in _imports(path):
            if target != pkg and RANK.get(target, CLI) >= mine:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports bloomforge.{target}")
    assert not wrong, "\n".join(wrong)
