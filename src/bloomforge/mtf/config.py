"""The recipe's `mtf` section: the prompted multitask data `bloomforge run` builds.

In: the mapping under `mtf:`. Out: an `MTFConfig`, read by the run's mtf stage, which calls
`bloomforge.mtf.build.build` (the function `bloomforge mtf build` calls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bloomforge.typed_config import bounded


@dataclass
class MTFConfig:
    """promptsource templates x local datasets -> OUT/xp3 (`bloomforge mtf build`)."""

    templates: list[str] = field(default_factory=list)  # templates.yaml files or folders
    tasks: dict[str, str] = field(default_factory=dict)  # dataset name -> its folder or file
    max_per_dataset: int | None = bounded(2000, ge=1)  # records per dataset x language
    seed: int = 0
