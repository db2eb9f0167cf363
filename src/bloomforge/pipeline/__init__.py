"""The whole pipeline in one run folder: `bloomforge run RECIPE` and `bloomforge demo`.

In: a run recipe (`config.RunRecipe`: corpus, data, tokenizer, tokens, model/loader/train, eval,
export, report sections). Out: one run folder with a subfolder per stage (`corpus/ data/
tokenizer/ tokens/ heldout/ train/ eval/ hf/`), `report.html`, `MODEL_CARD.md`, `DATA_CARD.md`,
the resolved `recipe.yaml`, and `.stages/<stage>.json` records (fingerprint, seconds, memory).

Modules: `config` (the recipe), `corpus` (text found on this machine: message catalogues and the
Python stdlib), `stages` (each stage calls its package's Python API), `runner` (fingerprints,
skip/resume, --from/--until), `report` and `cards` (report.html, MODEL_CARD.md, DATA_CARD.md),
`commands` (the CLI).
"""
