"""Training checkpoints: everything needed to continue a run bit for bit, written atomically.

In: the model, optimizer, loader and counters of a run. Out: `RUN/checkpoints/step_XXXXXXXX/`
    model.safetensors, config.yaml, meta.json, tokenizer.json   (a normal model checkpoint:
                                                                 eval/export/generate read it)
    optimizer.safetensors   AdamW moments and step counts, by parameter name
    rng.safetensors         torch CPU (and CUDA) generator states
    trainer.json            step, samples, tokens, skipped, loader and guard state
and in meta.json the sha256 of every file. Folders are written under a temporary name, fsynced
and renamed, and only the newest `keep_last` are kept. At resume the newest folder whose
checksums match is used; a damaged one is reported and the previous one used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bloomforge.checkpoint import (
    STEP_PREFIX,
    load_checkpoint,
    read_safetensors,
    run_checkpoints,
    save_checkpoint,
)
from bloomforge.errors import BloomforgeError
from bloomforge.recipe import Recipe

PREFIX = STEP_PREFIX


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fault_point(point: str, step: int) -> None:
    """Test hook: `BLOOMFORGE_FAULT=point@step` kills this process with SIGKILL right here."""
    if os.environ.get("BLOOMFORGE_FAULT") == f"{point}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_dirs(run: Path) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    return run_checkpoints(run)


def save_training_checkpoint(
    run: Path,
    step: int,
    model: torch.nn.Module,
    recipe: Recipe,
    tensors: dict[str, dict[str, torch.Tensor]],
    trainer_state: dict[str, Any],
    tokenizer_file: Path | None,
    keep_last: int,
) -> Path:
    out = run / "checkpoints" / f"{PREFIX}{step:08d}"

    def extra(tmp: Path) -> None:
        for name, group in tensors.items():
            save_file(group, tmp / f"{name}.safetensors")
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=1) + "\n")
        fault_point("checkpoint-write", step)  # model written, the rest not yet renamed

    save_checkpoint(
        out,
        model,
        recipe,
        tokenizer_file,
        meta={"step": step, "tokens": trainer_state["tokens"]},
        extra=extra,
        checksum=_sha256,
    )
    for old in checkpoint_dirs(run)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return out


def verify(folder: Path) -> str | None:
    """None if every file matches its checksum in meta.json, else what is wrong."""
    meta_file = folder / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"{meta_file}: unreadable ({e})"
    files = meta.get("files")
    if not files:
        return f"{meta_file}: no checksums"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path}: missing"
        if _sha256(path) != digest:
            return f"{path}: checksum mismatch (truncated or damaged)"
    return None


def latest_valid_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported with a warning."""
    for folder in reversed(checkpoint_dirs(run)):
        problem = verify(folder)
        if problem is None:
            return folder
        warnings.warn(f"skipping damaged checkpoint {folder.name}: {problem}", stacklevel=2)
    return None


def load_training_checkpoint(folder: Path, device: torch.device) -> dict[str, Any]:
    """Model (float32 master weights), tensors of each extra file, and trainer.json."""
    ckpt = load_checkpoint(folder, device=device)
    try:
        trainer_state = json.loads((folder / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BloomforgeError(f"{folder / 'trainer.json'}: unreadable ({e})") from e
    return {
        "model": ckpt.model,
        "optimizer": read_safetensors(folder / "optimizer.safetensors"),
        "rng": read_safetensors(folder / "rng.safetensors"),
        "trainer": trainer_state,
    }


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            out[f"cuda.{i}"] = torch.cuda.get_rng_state(i)
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    for key, value in tensors.items():
        if key.startswith("cuda.") and torch.cuda.is_available():
            torch.cuda.set_rng_state(value, int(key.split(".")[1]))
