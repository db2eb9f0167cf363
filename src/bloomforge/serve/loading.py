"""Model + tokenizer for the server from a bloomforge checkpoint, a run folder (its newest
checkpoint) or an exported HF BLOOM folder (config.json + safetensors/bin + tokenizer.json),
read in memory with the import code of `bloomforge import`."""

from __future__ import annotations

from pathlib import Path

import torch

from bloomforge.errors import BloomforgeError
from bloomforge.serve.engine import Engine, Limits


def load_engine(
    path: str | Path,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    limits: Limits | None = None,
    name: str | None = None,
) -> Engine:
    from bloomforge.checkpoint import load_checkpoint
    from bloomforge.interop.hf import load_hf_model
    from bloomforge.model.config import check_vocab
    from bloomforge.tokenizer import find_tokenizer_file, load_tokenizer

    folder = Path(path)
    if (folder / "config.json").is_file() and not (folder / "config.yaml").is_file():
        model = load_hf_model(folder, device, dtype)
        tok_file = find_tokenizer_file(folder)
        if tok_file is None:
            raise BloomforgeError(f"{folder}: no tokenizer.json")
        tokenizer = load_tokenizer(tok_file)
    else:
        ckpt = load_checkpoint(folder, device=device, dtype=dtype)
        model, tokenizer, tok_file = ckpt.model, ckpt.tokenizer(), ckpt.tokenizer_file
    check_vocab(tokenizer, model.cfg, tok_file or folder)
    return Engine(model, tokenizer, name or folder.resolve().name, device, limits)
