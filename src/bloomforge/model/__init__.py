"""The BLOOM model family: config and presets, the decoder, FLOP counting, generation."""

from bloomforge.model.bloom import BloomLM, KVCache
from bloomforge.model.config import PRESETS, ModelConfig

__all__ = ["PRESETS", "BloomLM", "KVCache", "ModelConfig"]
