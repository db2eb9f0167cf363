"""Interop with Hugging Face transformers: import and export of BLOOM checkpoints.

`hf` (export_hf, import_hf, load_any) is imported on first use: the recipe imports only
`interop.config`.
"""

__all__ = ["export_hf", "import_hf"]


def __getattr__(name: str):
    if name in __all__:
        from bloomforge.interop import hf

        return getattr(hf, name)
    raise AttributeError(name)
