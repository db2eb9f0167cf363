"""Hugging Face interop: a local `BloomForCausalLM` folder <-> a bloomforge checkpoint.

In (import): a folder with `config.json`, weights as `model.safetensors`, sharded
`model-*.safetensors` + index, or `pytorch_model*.bin` (loaded with weights_only), keys with or
without the `transformer.` prefix, and optionally `tokenizer.json`. Out: a bloomforge checkpoint.
In (export): a bloomforge checkpoint. Out: `config.json` (BloomConfig fields),
`model.safetensors`, the tokenizer files; transformers loads it offline.
Nothing is downloaded; variants BloomForCausalLM cannot represent are refused.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from bloomforge import files
from bloomforge.checkpoint import load_checkpoint, load_state, read_safetensors, save_checkpoint
from bloomforge.errors import BloomforgeError
from bloomforge.files import atomic_directory
from bloomforge.model import BloomLM, ModelConfig
from bloomforge.model.config import check_vocab
from bloomforge.outputs import check_output
from bloomforge.recipe import Recipe
from bloomforge.tokenizer import SPECIAL_TOKENS, find_tokenizer_file

# transformers name (after the `transformer.` prefix) -> bloomforge name; {i} is the layer.
_LAYER_KEYS = {
    "input_layernorm": "attn_norm",
    "self_attention.query_key_value": "attention.qkv",
    "self_attention.dense": "attention.out",
    "post_attention_layernorm": "ffn_norm",
    "mlp.dense_h_to_4h": "mlp.up",
    "mlp.dense_4h_to_h": "mlp.down",
}
_TOP_KEYS = {
    "word_embeddings": "tok_embeddings",
    "word_embeddings_layernorm": "emb_norm",
    "ln_f": "norm",
}
_LAYER_RE = re.compile(r"^h\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^(\w+)\.(weight|bias)$")


def hf_to_bloomforge(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a BloomForCausalLM / BloomModel state dict; the tied lm_head is dropped."""
    out: dict[str, torch.Tensor] = {}
    embedding = None
    lm_head = None
    for key, tensor in state.items():
        name = key.removeprefix("transformer.")
        if name == "lm_head.weight":
            lm_head = tensor
            continue
        if m := _LAYER_RE.match(name):
            layer, module, kind = m.groups()
            if module not in _LAYER_KEYS:
                raise BloomforgeError(f"{source}: unknown BLOOM weight '{key}'")
            out[f"layers.{layer}.{_LAYER_KEYS[module]}.{kind}"] = tensor
        elif (m := _TOP_RE.match(name)) and m.group(1) in _TOP_KEYS:
            out[f"{_TOP_KEYS[m.group(1)]}.{m.group(2)}"] = tensor
            if name == "word_embeddings.weight":
                embedding = tensor
        else:
            raise BloomforgeError(f"{source}: unknown BLOOM weight '{key}'")
    if lm_head is not None and embedding is not None and not torch.equal(lm_head, embedding):
        raise BloomforgeError(
            f"{source}: lm_head.weight differs from the word embedding; "
            "BLOOM ties them and bloomforge imports tied models only"
        )
    return out


def bloomforge_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `hf_to_bloomforge`, with BloomForCausalLM's `transformer.` prefix."""
    layer_keys = {v: k for k, v in _LAYER_KEYS.items()}
    top_keys = {v: k for k, v in _TOP_KEYS.items()}
    out = {}
    for key, tensor in state.items():
        if key.startswith("layers."):
            _, layer, rest = key.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            name = f"h.{layer}.{layer_keys[module]}.{kind}"
        else:
            module, kind = key.rsplit(".", 1)
            name = f"{top_keys[module]}.{kind}"
        out[f"transformer.{name}"] = tensor
    return out


def hf_config_to_model(hf: dict[str, Any], source: str) -> ModelConfig:
    if hf.get("model_type", "bloom") != "bloom":
        raise BloomforgeError(f"{source}: model_type is '{hf['model_type']}', expected 'bloom'")
    if hf.get("apply_residual_connection_post_layernorm", False):
        raise BloomforgeError(
            f"{source}: apply_residual_connection_post_layernorm=true is not BLOOM's "
            "pre-LN residual and is not supported"
        )
    if not hf.get("tie_word_embeddings", True):
        raise BloomforgeError(f"{source}: tie_word_embeddings=false is not supported")
    try:
        vocab = int(hf["vocab_size"])
        return ModelConfig(
            n_layer=int(hf.get("n_layer", hf.get("num_hidden_layers"))),
            hidden=int(hf.get("hidden_size", hf.get("n_embed"))),
            n_head=int(hf.get("n_head", hf.get("num_attention_heads"))),
            vocab_size=vocab,
            pad_vocab_multiple=1,  # the HF vocab_size is already the padded embedding size
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            hidden_dropout=float(hf.get("hidden_dropout", 0.0)),
            attention_dropout=float(hf.get("attention_dropout", 0.0)),
            init_std=float(hf["initializer_range"]) if "initializer_range" in hf else None,
            max_seq_len=int(hf.get("seq_length", 2048)),
        )
    except (KeyError, TypeError) as e:
        raise BloomforgeError(f"{source}: missing or invalid field {e}") from e
    except ValueError as e:
        raise BloomforgeError(f"{source}: {e}") from e


def model_to_hf_config(cfg: ModelConfig) -> dict[str, Any]:
    """BloomConfig fields for `cfg`, or a BloomforgeError naming what BLOOM cannot express."""
    unsupported = {
        "position": (cfg.position, "alibi"),
        "mlp": (cfg.mlp, "gelu"),
        "embedding_layernorm": (cfg.embedding_layernorm, True),
        "attention": (cfg.attention, "causal"),
        "tie_embeddings": (cfg.tie_embeddings, True),
        "ffn_hidden_size": (cfg.ffn_hidden, 4 * cfg.hidden),
    }
    for key, (value, needed) in unsupported.items():
        if value != needed:
            raise BloomforgeError(
                f"model.{key}={value}: BloomForCausalLM supports only {key}={needed}; "
                "this variant cannot be exported as BLOOM"
            )
    return {
        "architectures": ["BloomForCausalLM"],
        "model_type": "bloom",
        "vocab_size": cfg.padded_vocab_size,
        "hidden_size": cfg.hidden,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "initializer_range": cfg.std,
        "hidden_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout,
        "apply_residual_connection_post_layernorm": False,
        "pretraining_tp": 1,
        "slow_but_exact": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
        "seq_length": cfg.max_seq_len,
        "torch_dtype": "float32",
    }


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a local HF folder: safetensors (single or sharded) or .bin files.

    A shard index (`*.index.json`, as transformers writes it) names the files when present.
    """
    if (folder / "model.safetensors.index.json").is_file():
        files, loader = (
            _files_from_index(folder / "model.safetensors.index.json"),
            read_safetensors,
        )
    elif (folder / "pytorch_model.bin.index.json").is_file():
        files, loader = _files_from_index(folder / "pytorch_model.bin.index.json"), _load_bin
    elif shards := sorted(folder.glob("model*.safetensors")):
        files, loader = shards, read_safetensors
    else:
        files, loader = sorted(folder.glob("pytorch_model*.bin")), _load_bin
    if not files:
        raise BloomforgeError(f"{folder}: no model*.safetensors or pytorch_model*.bin weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(loader(f))
    return state


def _files_from_index(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise BloomforgeError(f"{index}: not a valid shard index ({e})") from e
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    for f in files:
        if not f.is_file():
            raise BloomforgeError(f"{index}: names {f.name}, which is missing")
    return files


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors come in many types
        raise BloomforgeError(f"{file}: unreadable weights ({type(e).__name__}: {e})") from e


def load_hf_model(
    hf_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> BloomLM:
    """A local HF BLOOM folder (config.json + safetensors or .bin) as a BloomLM, in memory."""
    folder = Path(hf_dir)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BloomforgeError(f"{config_file}: missing (not a Hugging Face model folder?)")
    try:
        hf_cfg = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise BloomforgeError(f"{config_file} line {e.lineno}: not valid JSON ({e.msg})") from e
    cfg = hf_config_to_model(hf_cfg, str(config_file))
    state = hf_to_bloomforge(read_hf_weights(folder), str(folder))
    with torch.device("meta"):
        model = BloomLM(cfg)
    load_state(model, state, str(folder), device, dtype)
    return model


def is_hf_folder(folder: str | Path) -> bool:
    """An HF model folder (config.json), not a bloomforge checkpoint (config.yaml)."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and not (folder / "config.yaml").is_file()


def load_any(
    path: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[BloomLM, Any, Path | None]:
    """(model, tokenizer, tokenizer file) of a bloomforge checkpoint, a run folder (its newest
    checkpoint) or a local HF BLOOM folder, in memory; the tokenizer checked against the model."""
    from bloomforge.tokenizer import load_tokenizer

    folder = Path(path)
    if is_hf_folder(folder):
        model = load_hf_model(folder, device, dtype)
        tok_file = find_tokenizer_file(folder)
        if tok_file is None:
            raise BloomforgeError(f"{folder}: no tokenizer.json")
        tokenizer = load_tokenizer(tok_file)
    else:
        ckpt = load_checkpoint(folder, device=device, dtype=dtype)
        model, tokenizer, tok_file = ckpt.model, ckpt.tokenizer(), ckpt.tokenizer_file
    check_vocab(tokenizer, model.cfg, tok_file or folder)
    return model, tokenizer, tok_file


def import_hf(hf_dir: str | Path, out: str | Path) -> Path:
    """Local HF BLOOM folder -> bloomforge checkpoint (weights kept in float32).

    `out` is replaced when complete; never the input, a folder holding it or a training run
    (the CLI also refuses any other non-empty folder without --overwrite)."""
    folder = Path(hf_dir)
    check_output(out, inputs=[folder], overwrite=True)
    model = load_hf_model(folder)
    meta = {"imported_from": str(folder.resolve())}
    return save_checkpoint(out, model, Recipe(model=model.cfg), find_tokenizer_file(folder), meta)


def export_hf(ckpt: str | Path, out: str | Path) -> Path:
    """bloomforge checkpoint -> folder that BloomForCausalLM.from_pretrained loads offline.

    `out` is replaced when complete; never the checkpoint, a folder holding it or a training
    run (the CLI also refuses any other non-empty folder without --overwrite)."""
    loaded = load_checkpoint(ckpt)
    check_output(out, inputs=[ckpt, loaded.path], overwrite=True)
    if loaded.tokenizer_file is not None:
        check_vocab(loaded.tokenizer(), loaded.recipe.model, loaded.tokenizer_file)
    hf_cfg = model_to_hf_config(loaded.recipe.model)
    with atomic_directory(out) as tmp:
        state = bloomforge_to_hf({k: v.contiguous() for k, v in loaded.model.state_dict().items()})
        # files: in atomic_directory
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        files.write_json(tmp / "config.json", hf_cfg, indent=2, ensure_ascii=True)
        if loaded.tokenizer_file is not None:
            _write_hf_tokenizer(loaded.tokenizer_file, tmp)
    return Path(out)


def _write_hf_tokenizer(tokenizer_file: Path, folder: Path) -> None:
    shutil.copyfile(tokenizer_file, folder / "tokenizer.json")
    unk, bos, eos, pad = SPECIAL_TOKENS
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": unk,
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "padding_side": "left",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    files.write_json(folder / "tokenizer_config.json", config, indent=2, ensure_ascii=True)


def check_export(ckpt_dir: Path, hf_dir: Path) -> float | None:
    """Max |logit difference| of transformers' BloomForCausalLM on the export vs our model."""
    try:
        from transformers import BloomForCausalLM
    except ImportError:
        return None
    ours = load_checkpoint(ckpt_dir)
    ours.model.eval()
    theirs = BloomForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    ids = torch.tensor([ours.tokenizer().encode("The cat sat on the mat. 1 2 3").ids[:32]])
    with torch.no_grad():
        a = ours.model(ids).float()
        b = theirs(ids).logits.float()[..., : a.shape[-1]]
    diff = float((a - b).abs().max())
    if diff > 1e-3:
        raise BloomforgeError(f"{hf_dir}: transformers' logits differ from ours by {diff:.3g}")
    return diff
