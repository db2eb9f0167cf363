"""Metrics and their standard errors, with lm-evaluation-harness's definitions.

In: per-example scores (log-likelihoods of choices, 0/1 correctness, summed log-probs with token,
byte and word counts). Out: floats. Sources (lm-eval 0.4 `api/metrics.py`, `api/task.py`):
- acc: argmax of the choices' log-likelihoods equals the gold index;
- acc_norm: argmax of log-likelihood / len(choice) in *characters* (lm-eval's acc_norm);
- acc_bytes: argmax of log-likelihood / UTF-8 bytes of the choice (lm-eval's acc_bytes);
- stderr of a mean: sample standard deviation (n - 1) / sqrt(n) (`mean_stderr`);
- a group's stderr from its subtasks' (`pooled_sample_stderr`, pooled variance);
- perplexity = exp(-mean log-likelihood) (LAMBADA); word/byte perplexity and bits per byte =
  -sum ll / sum bytes / ln 2 (`weighted_perplexity`, `bits_per_byte`, as in lm-eval's wikitext).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def mean_stderr(xs: Sequence[float]) -> float:
    """lm-eval's `mean_stderr`: sample standard deviation / sqrt(n); nan for n < 2."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1)) / math.sqrt(n)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's `pooled_sample_stderr`: the stderr of a group from its subtasks'."""
    var = sum((n - 1) * s**2 * n for n, s in zip(sizes, stderrs, strict=True))
    return math.sqrt(var / (sum(sizes) - len(sizes)) / sum(sizes))


def argmax(xs: Sequence[float]) -> int:
    """First index of the maximum (numpy.argmax's tie rule, which lm-eval uses)."""
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def choice_metrics(lls: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc, acc_norm (per character) and acc_bytes for one multiple-choice example."""
    chars = [ll / len(c) for ll, c in zip(lls, choices, strict=True)]
    nbytes = [ll / len(c.encode("utf-8")) for ll, c in zip(lls, choices, strict=True)]
    return {
        "acc": float(argmax(lls) == gold),
        "acc_norm": float(argmax(chars) == gold),
        "acc_bytes": float(argmax(nbytes) == gold),
    }


def perplexity(lls: Sequence[float]) -> float:
    """exp(-mean log-likelihood): lm-eval's `perplexity` aggregation (LAMBADA)."""
    return math.exp(-mean(lls))


def perplexity_stderr(lls: Sequence[float]) -> float:
    """Delta-method stderr of exp(-mean ll): ppl * stderr(ll).

    lm-eval bootstraps this one (100k resamples by default, random); the delta method is its
    deterministic first-order equivalent.
    """
    return perplexity(lls) * mean_stderr(lls)


def rolling_metrics(total_ll: float, tokens: int, nbytes: int, words: int) -> dict[str, float]:
    """Corpus-level scores from a summed log-likelihood (nats) and the corpus' sizes."""
    return {
        "token_perplexity": math.exp(-total_ll / tokens),
        "word_perplexity": math.exp(-total_ll / words),
        "byte_perplexity": math.exp(-total_ll / nbytes),
        "bits_per_byte": -total_ll / nbytes / math.log(2),
        "nll_per_token": -total_ll / tokens,
    }
