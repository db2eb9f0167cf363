"""Starting weights of a run (`init=`): a bloomforge checkpoint or run, or an HF BLOOM folder.

In: the `init` path and the recipe's model section. Out: the model config to build (the
init's shape, with the recipe's own non-shape choices such as attention, attn_impl or
dropout), the init's tokenizer file, and its weights copied into the (possibly sharded,
tensor-parallel or pipelined) model parts. Optimizer state and progress are not taken: a
finetuning run starts them fresh, as tr13 ran with `--no-load-optim --reset-progress`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from bloomforge.errors import BloomforgeError
from bloomforge.interop.hf import is_hf_folder
from bloomforge.model.config import ModelConfig
from bloomforge.tokenizer import find_tokenizer_file

# What the weights fix; a recipe may not change these from what the init has.
SHAPE_FIELDS = (
    "n_layer",
    "hidden",
    "n_head",
    "vocab_size",
    "pad_vocab_multiple",
    "ffn_hidden_size",
    "position",
    "mlp",
    "embedding_layernorm",
    "tie_embeddings",
    "layer_norm_eps",
    "rotary_base",
)


def _checkpoint(path: str | Path) -> Path:
    from bloomforge.checkpoint import resolve_checkpoint

    return resolve_checkpoint(path)


def init_model_config(init: str | Path) -> ModelConfig:
    """The model config stored with `init`."""
    folder = Path(init)
    if not folder.is_dir():
        raise BloomforgeError(f"init={init}: no such checkpoint, run or Hugging Face folder")
    if is_hf_folder(folder):
        from bloomforge.interop.hf import hf_config_to_model

        config_file = folder / "config.json"
        try:
            hf = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise BloomforgeError(f"{config_file} line {e.lineno}: not valid JSON ({e.msg})") from e
        return hf_config_to_model(hf, str(config_file))
    from bloomforge.recipe import Recipe
    from bloomforge.typed_config import ConfigError, from_dict, load_yaml

    ckpt = _checkpoint(folder)
    config = ckpt / "config.yaml"
    if not config.is_file():
        raise BloomforgeError(f"init={init}: {config} missing (not a bloomforge checkpoint?)")
    try:
        return from_dict(Recipe, load_yaml(config)).model
    except ConfigError as e:
        raise BloomforgeError(f"{config}: {e}") from e


def init_tokenizer(init: str | Path) -> Path | None:
    folder = Path(init)
    if not is_hf_folder(folder):
        folder = _checkpoint(folder)
    return find_tokenizer_file(folder)


def merge_model(recipe_model: ModelConfig, init_model: ModelConfig, init: str) -> ModelConfig:
    """The init's model with every non-shape field the recipe sets (a value other than the
    default); a shape field the recipe sets to another value than the init's is an error."""
    default = ModelConfig()
    changes = {}
    for f in dataclasses.fields(ModelConfig):
        mine, theirs = getattr(recipe_model, f.name), getattr(init_model, f.name)
        if f.name == "preset" or mine == getattr(default, f.name) or mine == theirs:
            continue
        if f.name in SHAPE_FIELDS:
            raise BloomforgeError(
                f"key 'model.{f.name}': the recipe has {mine!r} but init={init} has {theirs!r}; "
                "the shape comes from the init (remove the key)"
            )
        changes[f.name] = mine
    return dataclasses.replace(init_model, **changes)


def init_state(init: str | Path) -> dict[str, torch.Tensor]:
    """The init's weights in bloomforge's names, on the CPU, checked and finite."""
    from bloomforge.checkpoint import WEIGHTS, check_finite, read_safetensors, verify

    folder = Path(init)
    if is_hf_folder(folder):
        from bloomforge.interop.hf import hf_to_bloomforge, read_hf_weights

        state = hf_to_bloomforge(read_hf_weights(folder), str(folder))
        source = str(folder)
    else:
        ckpt = _checkpoint(folder)
        problem = verify(ckpt)
        if problem is not None:
            raise BloomforgeError(problem)
        source = str(ckpt / WEIGHTS)
        state = read_safetensors(ckpt / WEIGHTS)
    check_finite(state, source)
    return state


def load_init_weights(parts: list[nn.Module], cfg: ModelConfig, init: str | Path) -> None:
    """Copy the init's weights into this rank's model parts, whatever their layout: each rank
    reads the whole state and DCP's `set_model_state_dict` keeps this rank's shards."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        set_model_state_dict,
    )

    from bloomforge.checkpoint import check_state
    from bloomforge.model import BloomLM

    state = init_state(init)
    with torch.device("meta"):
        reference = BloomLM(cfg)
    check_state(reference.state_dict(), state, str(init))
    options = StateDictOptions(full_state_dict=True, strict=True)
    for part in parts:
        own = get_model_state_dict(part, options=StateDictOptions(full_state_dict=False))
        mine = {k: state[k] for k in own}
        set_model_state_dict(part, mine, options=options)
