"""Model + tokenizer for the server from a bloomforge checkpoint, a run folder (its newest
checkpoint) or an exported HF BLOOM folder (config.json + safetensors/bin + tokenizer.json),
read in memory with the import code of `bloomforge import`."""

from __future__ import annotations

import json
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
    from bloomforge.checkpoint import load_checkpoint, load_state
    from bloomforge.interop.hf import hf_config_to_model, hf_to_bloomforge, read_hf_weights
    from bloomforge.model import BloomLM
    from bloomforge.tokenizer import check_vocab, find_tokenizer_file, load_tokenizer

    folder = Path(path)
    if (folder / "config.json").is_file() and not (folder / "config.yaml").is_file():
        config_file = folder / "config.json"
        try:
            hf_cfg = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise BloomforgeError(f"{config_file} line {e.lineno}: not valid JSON ({e.msg})") from e
        cfg = hf_config_to_model(hf_cfg, str(config_file))
        state = hf_to_bloomforge(read_hf_weights(folder), str(folder))
        with torch.device("meta"):
            model = BloomLM(cfg)
        load_state(model, state, str(folder), device, dtype)
        tok_file = find_tokenizer_file(folder)
        if tok_file is None:
            raise BloomforgeError(f"{folder}: no tokenizer.json")
        tokenizer = load_tokenizer(tok_file)
    else:
        ckpt = load_checkpoint(folder, device=device, dtype=dtype)
        model, tokenizer, tok_file = ckpt.model, ckpt.tokenizer(), ckpt.tokenizer_file
    check_vocab(tokenizer, model.cfg, tok_file or folder)
    return Engine(model, tokenizer, name or folder.resolve().name, device, limits)
