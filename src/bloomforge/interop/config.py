"""The recipe's `export` section: what `bloomforge run` does when it writes the HF folder.

In: the mapping under `export:`. Out: an `ExportConfig`, read by the run's export stage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExportConfig:
    check: bool = True  # load the folder with transformers and compare logits with ours
