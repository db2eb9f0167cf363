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

_PIPELINE = ("build_executors", "build_stages", "prepare")


def __getattr__(name: str):
    """The datatrove pipeline is imported on first use: the recipe imports only the config."""
    if name in _PIPELINE:
        from bloomforge.data.prepare import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


__all__ = [
    "PrepareConfig",
    "SourceConfig",
    "build_executors",
    "build_stages",
    "config_from_inputs",
    "load_prepare_config",
    "prepare",
]
