"""Interop with Hugging Face transformers: import and export of BLOOM checkpoints."""

from bloomforge.interop.hf import export_hf, import_hf

__all__ = ["export_hf", "import_hf"]
