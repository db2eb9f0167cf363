"""`data prepare`: raw multilingual sources -> filtered, deduplicated, PII-redacted documents.

In: a `PrepareConfig` (`load_prepare_config("data.yaml")` or `config_from_inputs([...])`). Out: the
prepared folder (see `bloomforge.data.prepare.jobs`) and its `stats.json`.
"""

from bloomforge.data.prepare.config import (
    PrepareConfig,
    SourceConfig,
    config_from_inputs,
    load_prepare_config,
)

_JOBS = ("build_executors", "build_jobs", "prepare")


def __getattr__(name: str):
    """The datatrove jobs are imported on first use: the recipe imports only the config."""
    if name in _JOBS:
        from bloomforge.data.prepare import jobs

        return getattr(jobs, name)
    raise AttributeError(name)


__all__ = [
    "PrepareConfig",
    "SourceConfig",
    "build_executors",
    "build_jobs",
    "config_from_inputs",
    "load_prepare_config",
    "prepare",
]
