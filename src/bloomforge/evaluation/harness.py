"""The `bloomforge` model for lm-evaluation-harness: lm-eval's requests, bloomforge's scorer.

In: `lm_eval --model bloomforge --model_args checkpoint=CKPT[,dtype=bfloat16,max_length=N,
normalize_over=logits|tokenizer]` (plus lm-eval's own `--device` and `--batch-size`), or
`BloomforgeLM(scorer=...)` in Python. Out: answers to lm-eval's three request types, computed by
`bloomforge.evaluation.scoring` (the same code `bloomforge eval` runs), so both give identical
scores. Without a device the model runs where lm-eval's hf model would: cuda if available, else
cpu (lm-eval's CLI passes `cuda:0` when `--device` is not given; without CUDA that means cpu).

Importing this module registers the model with lm-eval's registry. lm-eval 0.4.x has no plugin
entry point for models (its registry can hold lazy `module:attr` placeholders, but nothing
scans installed packages), so the model must be imported before lm-eval parses its arguments:
`python -m bloomforge.evaluation.lm_eval_cli ...` does that, or `import
bloomforge.evaluation.harness` before `lm_eval.simple_evaluate(model="bloomforge", ...)`.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (fills the registry's lazy entries before ours is added)
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from bloomforge.devices import resolve_device
from bloomforge.evaluation.scoring import Scorer, check_normalize_over
from bloomforge.model.config import check_vocab


@register_model("bloomforge")
class BloomforgeLM(TemplateLM):
    """A bloomforge checkpoint as an lm-eval model (causal LM, log-likelihood + generation)."""

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str | None = None,
        batch_size: int | str | None = "auto",
        dtype: str = "float32",
        max_length: int | str | None = None,
        max_gen_toks: int | str = 256,
        share_context: bool | str = True,
        normalize_over: str = "logits",
        scorer: Scorer | None = None,
        **_: Any,  # lm-eval also passes max_batch_size etc.
    ) -> None:
        super().__init__()
        if scorer is None:
            if checkpoint is None:
                raise ValueError("model_args needs checkpoint=PATH (a bloomforge checkpoint)")
            from bloomforge.checkpoint import load_checkpoint

            if device == "cuda:0" and not torch.cuda.is_available():
                # lm-eval's CLI passes its default cuda:0 when --device is not given, and its
                # hf model then falls back to the CPU; so does this one. Plain `cuda` is an error.
                device = None
            device = resolve_device(device)
            check_normalize_over(normalize_over)  # before the checkpoint loads
            ckpt = load_checkpoint(checkpoint, device=device, dtype=getattr(torch, dtype))
            tokenizer = ckpt.tokenizer()
            check_vocab(tokenizer, ckpt.model.cfg, ckpt.tokenizer_file or "tokenizer")
            scorer = Scorer(
                ckpt.model,
                tokenizer,
                device,
                _batch_size(batch_size),
                int(max_length) if max_length else None,
                share_context=str(share_context).lower() not in ("false", "0", "no"),
                normalize_over=normalize_over,
            )
        self.scorer = scorer
        self._device = torch.device(scorer.device)  # lm-eval reads lm.device
        self.max_gen_toks = int(max_gen_toks)

    # --- TemplateLM's tokenization hooks (lm-eval's own code uses them for some tasks) -------
    @property
    def eot_token_id(self) -> int:
        return self.scorer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.scorer.prefix_id

    @property
    def max_length(self) -> int:
        return int(self.scorer.max_length or 0)

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **_: Any
    ) -> list[int]:
        return self.scorer.encode(string)

    def tok_decode(self, tokens: list[int], **_: Any) -> str:
        return self.scorer.tokenizer.decode(tokens, skip_special_tokens=False)

    # --- the three request types: all delegated to the one scorer -------------------------
    def loglikelihood(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        pairs = [(req.args[0], req.args[1]) for req in requests]
        return self._cached(requests, self.scorer.loglikelihood(pairs), "loglikelihood")

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **_: Any
    ) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood_tokens([(ctx, cont) for _, ctx, cont in requests])

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        scored = self.scorer.loglikelihood_rolling([req.args[0] for req in requests])
        return self._cached(requests, [ll for ll, _ in scored], "loglikelihood_rolling")

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        out: list[str] = [""] * len(requests)
        groups: dict[int, list[int]] = {}
        contexts, stops = [], []
        for i, req in enumerate(requests):
            context, kwargs = req.args[0], dict(req.args[1] or {})
            if kwargs.get("do_sample") or kwargs.get("temperature", 0.0) not in (0, 0.0):
                raise ValueError("the bloomforge lm-eval model decodes greedily only")
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            contexts.append(context)
            stops.append(until)
            groups.setdefault(int(kwargs.get("max_gen_toks", self.max_gen_toks)), []).append(i)
        for n_new, idx in groups.items():
            texts = self.scorer.generate_until(
                [contexts[i] for i in idx], [stops[i] for i in idx], n_new
            )
            for i, t in zip(idx, texts, strict=True):
                out[i] = t
        return self._cached(requests, out, "generate_until")

    def _cached(self, requests: list[Instance], results: list, kind: str) -> list:
        for req, res in zip(requests, results, strict=True):
            self.cache_hook.add_partial(kind, req.args, res)
        return results


def _batch_size(value: int | str | None) -> int | str:
    # lm-eval passes "auto", "auto:N" (recompute N times; one probe is enough here) or a number.
    if value is None or str(value).startswith("auto"):
        return "auto"
    return int(value)
