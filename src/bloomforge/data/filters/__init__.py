"""Language identification and the ROOTS OSCAR quality filters, as datatrove pipeline steps.

In: a `FilterConfig` (defaults: BigScience's per-language parameters, stopwordsiso stop words) and
documents whose metadata carries `source` and `language`. Out: `language_id_step(config,
language)` (adds `language_score`, sets `language` for "auto" sources) and
`filter_steps(config)`, the enabled filters in ROOTS order, each a ledger-counted datatrove filter
that removes documents with a named reason. `disabled_filters(config)` says which filters cannot
run and why. `EachFilterAlone(filters)` counts what each filter would discard on its own (the
ROOTS paper's figure). See docs/data-filters.md.
"""

from __future__ import annotations

from datatrove.pipeline.base import PipelineStep

from bloomforge.data.filters.alone import EachFilterAlone, read_alone
from bloomforge.data.filters.config import FILTER_NAMES, STOPWORDSISO, FilterConfig
from bloomforge.data.filters.lid import AUTO, LanguageId, identify
from bloomforge.data.filters.params import bigscience_parameters, language_parameters
from bloomforge.data.filters.quality import FILTER_CLASSES, RootsFilter
from bloomforge.data.filters.resources import check_list_file, disabled_filters

__all__ = [
    "AUTO",
    "FILTER_NAMES",
    "EachFilterAlone",
    "FilterConfig",
    "LanguageId",
    "RootsFilter",
    "bigscience_parameters",
    "disabled_filters",
    "filter_steps",
    "identify",
    "language_id_step",
    "language_parameters",
    "read_alone",
]


def language_id_step(config: FilterConfig, language: str) -> PipelineStep:
    """The language-identification step for a source whose language is `language` or "auto"."""
    return LanguageId(language, max_chars=config.lid_text_chars)


def filter_steps(config: FilterConfig, excluded_dir: str | None = None) -> list[PipelineStep]:
    """The filters that can run, in ROOTS order; with `excluded_dir`, removed documents are
    written to `excluded_dir/<filter>/` (jsonl.gz, with `filter_reason` in their metadata)."""
    if config.stopwords != STOPWORDSISO and "stopwords" in config.filters:
        check_list_file(config.stopwords, "stop-word")
    if config.flagged_words is not None and "flagged_words" in config.filters:
        check_list_file(config.flagged_words, "flagged-word")
    off = disabled_filters(config)
    steps: list[PipelineStep] = []
    for name in FILTER_NAMES:
        if name in off:
            continue
        writer = None
        if excluded_dir is not None:
            from datatrove.pipeline.writers import JsonlWriter

            writer = JsonlWriter(f"{excluded_dir}/{name}", compression="gzip")
        steps.append(FILTER_CLASSES[name](config, exclusion_writer=writer))
    return steps
