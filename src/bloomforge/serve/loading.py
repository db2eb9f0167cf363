"""Model + tokenizer for the server from a bloomforge checkpoint, a run folder (its newest
checkpoint) or an exported HF BLOOM folder (config.json + safetensors/bin + tokenizer.json),
read in memory with the import code of `bloomforge import`."""

from __future__ import annotations

from pathlib import Path

import torch

from bloomforge.serve.engine import Engine, Limits


def load_engine(
    path: str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    limits: Limits | None = None,
    name: str | None = None,
) -> Engine:
    from bloomforge.interop.hf import load_any

    folder = Path(path)
    model, tokenizer, _ = load_any(folder, device, dtype)
    return Engine(model, tokenizer, name or folder.resolve().name, device, limits)
