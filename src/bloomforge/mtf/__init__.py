"""Multitask prompted finetuning data (BLOOMZ's xP3): promptsource templates x local datasets.

In: promptsource-format `templates.yaml` files and local datasets (XQuAD, Tatoeba, HellaSwag).
Out: `bloomforge mtf build` writes `{inputs, targets}` jsonl per language plus a manifest.
"""
