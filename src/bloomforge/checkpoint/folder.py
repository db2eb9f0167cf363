"""One checkpoint folder: its format, checksums, writer and reader.

A checkpoint is a folder:
    model.safetensors   weights under bloomforge's names (tied output stored once)
    config.yaml         the resolved recipe (its `model` section rebuilds the model)
    meta.json           format version, step, provenance
    tokenizer.json      optional
In: a model + recipe (+ tokenizer). Out: that folder, written under a temporary name and renamed
into place, so an interrupted save never leaves a half-written checkpoint; meta.json records the
sha256 of every file. Saving refuses non-finite weights. Loading never executes code (safetensors,
safe YAML), verifies the checksums, refuses non-finite weights and names the file and key on any
mismatch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from bloomforge import files
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.model import BloomLM
from bloomforge.parallel.dims import local_part
from bloomforge.recipe import Recipe, save_recipe
from bloomforge.tokenizer import find_tokenizer_file, load_tokenizer
from bloomforge.typed_config import ConfigError, from_dict, load_yaml

FORMAT = "bloomforge-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"


@dataclass
class Checkpoint:
    model: BloomLM
    recipe: Recipe
    meta: dict[str, Any]
    path: Path

    @property
    def tokenizer_file(self) -> Path | None:
        return find_tokenizer_file(self.path)

    def tokenizer(self) -> Tokenizer:
        if self.tokenizer_file is None:
            raise BloomforgeError(f"{self.path}: checkpoint has no tokenizer.json")
        return load_tokenizer(self.tokenizer_file)


def save_checkpoint(
    out: str | Path,
    model: BloomLM | dict[str, torch.Tensor] | None,
    recipe: Recipe,
    tokenizer_file: str | Path | None = None,
    meta: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write the checkpoint folder atomically; an existing folder at `out` is replaced.

    `model` is a model, its state dict, or None when `extra(tmp)` writes model.safetensors
    itself (consolidated from a sharded save). `extra(tmp)` writes further files into the folder
    (training state); meta.json records `files: {name: sha256}` for every other file.
    """
    with atomic_directory(out) as tmp:
        if model is not None:
            state = model if isinstance(model, dict) else model.state_dict()
            state = cpu_tensors(state)
            check_finite(state, f"{out}/{WEIGHTS}", "refusing to save: ")
            save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})  # files: in atomic_directory
        save_recipe(recipe, tmp / "config.yaml")
        if tokenizer_file is not None:
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        if extra is not None:
            extra(tmp)
        if not (tmp / WEIGHTS).is_file():
            raise BloomforgeError(f"{out}: no {WEIGHTS} was written")
        info = {"format": FORMAT, "version": VERSION, **(meta or {})}
        info["files"] = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
        files.write_json(tmp / "meta.json", info, indent=2, ensure_ascii=True)
    return Path(out)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path, require: bool = False) -> str | None:
    """None if every file matches its checksum in meta.json, else what is wrong. Without
    `require`, a folder with no recorded checksums (an older version's, or one made by hand) is
    not judged; training checkpoints always require them."""
    meta_file = folder / "meta.json"
    if not meta_file.is_file() and not require:
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        return f"{meta_file} line {e.lineno}: not valid JSON ({e.msg})"
    except OSError as e:
        return f"{meta_file}: unreadable ({e})"
    if require and not meta.get("files"):
        return f"{meta_file}: no checksums"
    for name, digest in (meta.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        if sha256(path) != digest:
            return f"{path}: checksum mismatch (truncated or damaged)"
    return None


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding NaN or inf (a DTensor: its local shard), else None."""
    for name, tensor in named:
        local = local_part(tensor)
        if local.is_floating_point() and not torch.isfinite(local).all():
            return name
    return None


def check_finite(state: dict[str, torch.Tensor], source: str, what: str = "") -> None:
    """A one-line error naming the first tensor with NaN or inf."""
    name = first_non_finite(state.items())
    if name is not None:
        raise BloomforgeError(f"{what}{source}: '{name}' contains NaN or inf")


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies, as safetensors writes them."""
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_folder(
    path: Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Checkpoint:
    """The checkpoint in `path` itself (`load_checkpoint` also takes a run folder)."""
    for name in (WEIGHTS, "config.yaml"):
        if not (path / name).is_file():
            raise BloomforgeError(f"{path / name}: missing (not a bloomforge checkpoint?)")
    problem = verify(path)
    if problem is not None:
        raise BloomforgeError(problem)
    try:
        recipe = from_dict(Recipe, load_yaml(path / "config.yaml"))
    except ConfigError as e:
        raise BloomforgeError(f"{path / 'config.yaml'}: {e}") from e
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    except json.JSONDecodeError as e:
        raise BloomforgeError(f"{meta_file} line {e.lineno}: not valid JSON ({e.msg})") from e
    state = read_safetensors(path / WEIGHTS, device)
    with torch.device("meta"):
        model = BloomLM(recipe.model)
    load_state(model, state, str(path / WEIGHTS), device, dtype)
    return Checkpoint(model, recipe, meta, path)


def read_safetensors(file: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file; a truncated or foreign file is named in the error."""
    try:
        return load_file(file, device=str(device))
    except (SafetensorError, OSError) as e:
        raise BloomforgeError(f"{file}: unreadable weights ({e})") from e


def load_state(
    model: BloomLM,
    state: dict[str, torch.Tensor],
    source: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """Copy `state` into a (meta or real) model, checking every name and shape first."""
    check_finite(state, source)
    check_state(model.state_dict(), state, source)
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.init_buffers(torch.device(device))


def check_state(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str
) -> None:
    """Every name of `expected` in `state`, no other, each with the expected shape."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise BloomforgeError(f"{source}: weights do not match the config ({what})")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise BloomforgeError(
                f"{source}: '{name}' has shape {tuple(tensor.shape)}, "
                f"the config needs {tuple(expected[name].shape)}"
            )
