"""`data prepare`: raw multilingual sources -> filtered, deduplicated, PII-redacted documents.

In: a `PrepareConfig` (`load_prepare_config("data.yaml")` or `config_from_inputs([...])`). Out: the
prepared folder (see `bloomforge.data.prepare.pipeline`) and its `stats.json`.
"""

from bloomforge.data.prepare.config import (
    PrepareConfig,
    SourceConfig,
    config_from_inputs,
    load_prepare_config,
)
from bloomforge.data.prepare.pipeline import build_executors, build_stages, prepare

__all__ = [
    "PrepareConfig",
    "SourceConfig",
    "build_executors",
    "build_stages",
    "config_from_inputs",
    "load_prepare_config",
    "prepare",
]
