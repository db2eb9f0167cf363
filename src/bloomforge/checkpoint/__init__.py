"""Checkpoints: one folder's format, and a training run's checkpoints.

- `folder`: one checkpoint folder (model.safetensors, config.yaml, meta.json with the sha256 of
  every file, tokenizer.json): `save_checkpoint`, `verify`, `load_folder` and the weight checks.
- `manager`: `Checkpointer`, a run's `checkpoints/step_N` folders: naming, listing, the newest
  valid one, saving a training checkpoint (weights, optimizer, rng, trainer.json), pruning,
  cleaning interrupted saves; `load_checkpoint` / `resolve_checkpoint` take a checkpoint or a
  run folder (its newest checkpoint).
- `rng`: the random state a training checkpoint carries.
Sharded (DCP) saving and loading is `bloomforge.parallel.checkpoint`, which `Checkpointer` calls.
"""

from bloomforge.checkpoint.folder import (
    FORMAT,
    VERSION,
    WEIGHTS,
    Checkpoint,
    check_finite,
    check_state,
    cpu_tensors,
    first_non_finite,
    load_folder,
    load_state,
    read_safetensors,
    save_checkpoint,
    sha256,
    verify,
)
from bloomforge.checkpoint.manager import (
    STEP_PREFIX,
    Checkpointer,
    fault_point,
    load_checkpoint,
    resolve_checkpoint,
)
from bloomforge.checkpoint.rng import all_rank_rng_tensors, restore_rng, rng_tensors

__all__ = [
    "FORMAT",
    "STEP_PREFIX",
    "VERSION",
    "WEIGHTS",
    "Checkpoint",
    "Checkpointer",
    "all_rank_rng_tensors",
    "check_finite",
    "check_state",
    "cpu_tensors",
    "fault_point",
    "first_non_finite",
    "load_checkpoint",
    "load_folder",
    "load_state",
    "read_safetensors",
    "resolve_checkpoint",
    "restore_rng",
    "rng_tensors",
    "save_checkpoint",
    "sha256",
    "verify",
]
