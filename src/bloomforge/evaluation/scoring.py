"""Scoring text with a BloomLM, as lm-evaluation-harness defines it: the one scorer.

In: a `BloomLM` and its `tokenizers.Tokenizer`; requests as strings. Out:
- `loglikelihood(pairs)`: per (context, continuation) the summed log-probability of the
  continuation and whether greedy decoding would have produced it (`is_greedy`);
- `loglikelihood_rolling(texts)`: per text the summed log-probability of all its tokens and the
  token count, scored in windows of the model's context (lm-eval's rolling windows);
- `generate_until(...)`: greedy continuations cut at stop strings.

Conventions copied from lm-eval 0.4 (`TemplateLM._encode_pair`, `TemplateLM.loglikelihood`,
`HFLM._loglikelihood_tokens`, `utils.get_rolling_token_windows`): trailing spaces of the context
move into the continuation; context + continuation is encoded whole and split at the context's
token count; an empty context is replaced by the prefix token (BOS, else EOS); inputs longer than
the context window are truncated from the left; requests are sorted longest first and run in
right-padded batches (causal attention never looks right, so padding needs no mask). Only the
continuation positions go through the output projection. The softmax covers all the model's
output rows, the embedding's padding rows too (`normalize_over="logits"`), as transformers and
lm-eval's hf backend compute it and as BLOOM's published scores were computed (250880 logits for
250680 tokens); `normalize_over="tokenizer"` restricts it to the tokenizer's vocabulary. Requests
whose contexts tokenize the same (the choices of one example) run that context once into a KV
cache whose rows are copied per choice (`share_context`; the scores are the same either way).
Prefix-LM models (`attention: prefix_lm`) get the context as their prefix: bidirectional
attention inside it, causal over the continuation. `bloomforge eval` and the lm-eval model class
both call this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bloomforge.errors import BloomforgeError
from bloomforge.model.bloom import BloomLM, KVCache
from bloomforge.model.config import check_vocab

CPU_BATCH_SIZE = 16  # `--batch-size auto` on CPU: no OOM signal to probe, so a fixed default
AUTO_START = 512  # `--batch-size auto` on CUDA: start here, halve on out-of-memory
LOGITS_CHUNK = 2**26  # logits elements per chunk (256 MB in float32)

# What the log-softmax normalises over: every output row (transformers, lm-eval's hf backend,
# BLOOM's published numbers), or only the rows the tokenizer can produce.
NORMALIZE_OVER = ("logits", "tokenizer")

TokenPair = tuple[list[int], list[int]]
Progress = Callable[[int], None]


def check_normalize_over(value: str, option: str = "normalize_over") -> str:
    if value not in NORMALIZE_OVER:
        raise BloomforgeError(f"{option}={value}: expected one of {', '.join(NORMALIZE_OVER)}")
    return value


def rolling_windows(tokens: Sequence[int], prefix_id: int, max_len: int) -> list[TokenPair]:
    """(context, continuation) windows scoring every token once, each input <= max_len tokens.

    Equal to lm-eval's `make_disjoint_window(get_rolling_token_windows(..., context_len=1))`:
    the first window is conditioned on the prefix token; a full later window on the one token
    before it; the last (short) window on as much preceding text as fits.
    """
    tokens = list(tokens)
    windows: list[TokenPair] = []
    for start in range(0, len(tokens), max_len):
        end = min(start + max_len, len(tokens))
        ctx = [prefix_id] if start == 0 else tokens[max(0, end - max_len - 1) : start]
        windows.append((ctx, tokens[start:end]))
    return windows


@dataclass
class Scorer:
    """A model + tokenizer that answers lm-eval's three request types, batched."""

    model: BloomLM
    tokenizer: Tokenizer
    device: torch.device | str = "cpu"
    batch_size: int | str = "auto"
    max_length: int | None = None  # None: the model's max_seq_len
    share_context: bool = True  # run a context shared by several choices once (KV cache)
    normalize_over: str = "logits"  # log-softmax over all output rows, or "tokenizer"'s only
    _found_batch: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.model.eval()
        cfg = self.model.cfg
        if self.max_length is None:
            self.max_length = cfg.max_seq_len
        if self.max_length < 2:  # a rolling window needs a context token and a scored one
            raise BloomforgeError(f"max_length={self.max_length}: must be at least 2")
        if self.max_length > cfg.max_seq_len and cfg.position == "learned":
            raise BloomforgeError(
                f"max_length={self.max_length}: beyond the model's context of "
                f"{cfg.max_seq_len} tokens (max_seq_len), where its learned positions end"
            )
        check_normalize_over(self.normalize_over)
        check_vocab(self.tokenizer, cfg, "the tokenizer")
        # Output rows the log-softmax covers: all of them (the padded rows too), or the
        # tokenizer's vocabulary only.
        self.vocab_limit = cfg.padded_vocab_size
        if self.normalize_over == "tokenizer":
            self.vocab_limit = min(self.tokenizer.get_vocab_size(), cfg.padded_vocab_size)
        # Prefix-LM: the context is the prefix, seen bidirectionally (prefix_len in columns).
        self.prefix_lm = cfg.attention == "prefix_lm"
        ids = [self.tokenizer.token_to_id(t) for t in ("<s>", "</s>")]
        # lm-eval's HFLM conditions empty contexts (and rolling windows) on BOS, else EOS.
        self.eos_id = ids[1] if ids[1] is not None else 0
        self.prefix_id = ids[0] if ids[0] is not None else self.eos_id
        pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = pad if pad is not None else self.eos_id

    # --- tokenization ---------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_pair(self, context: str, continuation: str) -> TokenPair:
        """lm-eval's split: spaces move to the continuation; the continuation is the whole
        encoding after as many tokens as the context alone encodes to."""
        if context == "":
            cont = self.encode(continuation)
            if cont and cont[0] == self.prefix_id:
                return cont[:1], cont[1:]
            return [self.prefix_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)  # lm-eval keeps the context's own tokens, even where a merge
        return ctx, whole[len(ctx) :]  # across the boundary makes them differ from whole's

    # --- scoring --------------------------------------------------------------------------
    def loglikelihood(
        self, pairs: Sequence[tuple[str, str]], progress: Progress | None = None
    ) -> list[tuple[float, bool]]:
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in pairs], progress)

    def loglikelihood_rolling(
        self, texts: Sequence[str], progress: Progress | None = None
    ) -> list[tuple[float, int]]:
        """Per text: (summed log-probability of all its tokens, number of tokens)."""
        owners, windows, counts = [], [], []
        for i, text in enumerate(texts):
            tokens = self.encode(text)
            counts.append(len(tokens))
            for w in rolling_windows(tokens, self.prefix_id, self.max_length):
                owners.append(i)
                windows.append(w)
        totals = [0.0] * len(texts)
        for owner, (ll, _) in zip(
            owners, self.loglikelihood_tokens(windows, progress), strict=True
        ):
            totals[owner] += ll
        return list(zip(totals, counts, strict=True))

    @torch.no_grad()
    def loglikelihood_tokens(
        self, requests: Sequence[TokenPair], progress: Progress | None = None
    ) -> list[tuple[float, bool]]:
        """Summed log-prob and is_greedy of each continuation given its context (token ids)."""
        for ctx, cont in requests:
            if not ctx or not cont:
                raise ValueError("every request needs >= 1 context and >= 1 continuation token")
            if len(cont) > self.max_length:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds {self.max_length}")
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        groups, singles = self._context_groups(requests) if self.share_context else ([], [])
        if not self.share_context:
            singles = list(range(len(requests)))
        # lm-eval's Collator order: longest first (OOM shows at once), ties by token content.
        singles.sort(key=lambda i: (-len(requests[i][0]) - len(requests[i][1]), requests[i]))
        groups.sort(key=lambda g: -len(g[0]) - max(len(requests[i][1]) for i in g[1]))
        units = [("group", g) for g in groups] + [("single", i) for i in singles]
        start = 0
        while start < len(units):
            bs, take, rows = self._batch_size(), [], 0
            for kind, u in units[start:]:
                n = len(u[1]) if kind == "group" else 1
                if take and (rows + n > bs or kind != take[0][0]):
                    break
                take.append((kind, u))
                rows += n
            try:
                if take[0][0] == "group":
                    scored = self._score_shared([u for _, u in take], requests)
                    idx = [i for _, (_, members) in take for i in members]
                else:
                    idx = [u for _, u in take]
                    scored = self._score_batch([requests[i] for i in idx])
            except torch.OutOfMemoryError:
                if self.batch_size != "auto" or bs == 1:
                    raise
                self._found_batch = bs // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, r in zip(idx, scored, strict=True):
                results[i] = r
            start += len(take)
            if progress is not None:
                progress(rows)
        return results

    def _context_groups(
        self, requests: Sequence[TokenPair]
    ) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
        """Requests sharing a context that fits without truncation: (context, members); rest."""
        by_ctx: dict[tuple[int, ...], list[int]] = {}
        singles = []
        for i, (ctx, cont) in enumerate(requests):
            if len(ctx) + len(cont) <= self.max_length + 1:
                by_ctx.setdefault(tuple(ctx), []).append(i)
            else:
                singles.append(i)
        groups = []
        for ctx, members in by_ctx.items():
            if len(members) > 1:
                groups.append((list(ctx), members))
            else:
                singles += members
        return groups, singles

    def _batch_size(self) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self._found_batch is None:
            on_gpu = torch.device(self.device).type == "cuda"
            self._found_batch = AUTO_START if on_gpu else CPU_BATCH_SIZE
        return self._found_batch

    def _prefix_kwargs(self, columns: Sequence[int]) -> dict[str, Tensor]:
        """forward's prefix_len (B,) for a prefix-LM model; nothing for a causal one."""
        if not self.prefix_lm:
            return {}
        return {"prefix_len": torch.tensor(columns, dtype=torch.long, device=self.device)}

    def _score_batch(self, batch: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        """One forward of right-padded context + continuation rows."""
        L = self.max_length
        inputs = [(ctx + cont)[-(L + 1) :][:-1] for ctx, cont in batch]  # lm-eval: cut the left
        width = max(len(x) for x in inputs)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        for row, x in enumerate(inputs):
            ids[row, : len(x)] = torch.tensor(x)  # right padding: real tokens never see it
        # prefix-LM: the context's columns that survived the left cut (x ends with cont[:-1])
        prefix = [len(x) - len(cont) + 1 for x, (_, cont) in zip(inputs, batch, strict=True)]
        kw = self._prefix_kwargs(prefix)
        hidden = self.model(ids.to(self.device), return_hidden=True, **kw)  # (B, T, h)
        ends = [len(x) for x in inputs]
        return self._continuation_scores(hidden, ends, [cont for _, cont in batch])

    def _score_shared(
        self, groups: Sequence[tuple[list[int], list[int]]], requests: Sequence[TokenPair]
    ) -> list[tuple[float, bool]]:
        """Whole contexts run once (left-padded, into a KV cache): the last context column
        predicts every choice's first token. Then the rest of every continuation of every group
        runs as one batch on its context's cache rows."""
        model, cfg, dev = self.model, self.model.cfg, self.device
        dtype = next(model.parameters()).dtype
        W = max(len(ctx) for ctx, _ in groups)
        ids = torch.full((len(groups), W), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(groups), W), dtype=torch.long)
        for g, (ctx, _) in enumerate(groups):
            ids[g, W - len(ctx) :] = torch.tensor(ctx)
            mask[g, W - len(ctx) :] = 1
        owner = [g for g, (_, members) in enumerate(groups) for _ in members]
        conts = [requests[i][1] for _, members in groups for i in members]
        # Prefix-LM: every context is the prefix; left padding puts it in the columns < W (the
        # padding columns stay masked out).
        kw = self._prefix_kwargs([W] * len(groups))
        ctx_cache = KVCache(cfg, len(groups), W, dev, dtype)
        ctx_hidden = model(ids.to(dev), attention_mask=mask.to(dev), cache=ctx_cache,
                           return_hidden=True, **kw)  # fmt: skip
        rows = torch.tensor(owner, device=ctx_hidden.device)
        hidden = ctx_hidden[:, -1:].index_select(0, rows)  # (N, 1, h): predicts each cont[0]
        steps = [cont[:-1] for cont in conts]
        T = max(len(s) for s in steps)
        if T:
            cache = KVCache(cfg, len(steps), W + T, dev, dtype)
            cache.k[:, :, :, :W] = ctx_cache.k.index_select(1, rows)
            cache.v[:, :, :, :W] = ctx_cache.v.index_select(1, rows)
            cache.length = W
            ids = torch.full((len(steps), T), self.pad_id, dtype=torch.long)
            for row, x in enumerate(steps):
                if x:
                    ids[row, : len(x)] = torch.tensor(x)  # right padding after the real steps
            full_mask = torch.cat([mask[owner], torch.ones((len(steps), T), dtype=torch.long)], 1)
            # continuation columns are causal (every cached column precedes them): no prefix
            after = model(ids.to(dev), attention_mask=full_mask.to(dev), cache=cache,
                          return_hidden=True)  # fmt: skip
            hidden = torch.cat([hidden, after], dim=1)  # (N, 1 + T, h)
        return self._continuation_scores(hidden, [1 + len(s) for s in steps], conts)

    def _continuation_scores(
        self, hidden: Tensor, ends: Sequence[int], conts: Sequence[list[int]]
    ) -> list[tuple[float, bool]]:
        """Row r's continuation is predicted at columns ends[r]-len(cont) .. ends[r]-1."""
        rows, cols, targets = [], [], []
        for row, (end, cont) in enumerate(zip(ends, conts, strict=True)):
            rows += [row] * len(cont)
            cols += range(end - len(cont), end)
            targets += cont
        dev = hidden.device
        picked = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]  # (N, h)
        target = torch.tensor(targets, device=dev)
        token_ll = torch.empty(len(targets), device=dev, dtype=torch.float32)
        greedy = torch.empty(len(targets), device=dev, dtype=torch.bool)
        # (n, V) logits a chunk at a time: a batch of 2048-token windows over BLOOM's 250880
        # tokens would be 2 GB of float32 per row at once.
        step = max(1, LOGITS_CHUNK // self.vocab_limit)
        for a in range(0, len(targets), step):
            logits = self.model.logits(picked[a : a + step])[:, : self.vocab_limit].float()
            logprobs = torch.log_softmax(logits, dim=-1)  # continuation positions only
            t = target[a : a + step]
            token_ll[a : a + step] = logprobs.gather(1, t[:, None]).squeeze(1)
            greedy[a : a + step] = logprobs.argmax(dim=-1) == t
        out, at = [], 0
        for cont in conts:
            n = len(cont)
            ll = float(token_ll[at : at + n].double().sum())
            out.append((ll, bool(greedy[at : at + n].all())))
            at += n
        return out

    # --- generation -----------------------------------------------------------------------
    def generate_until(
        self, contexts: Sequence[str], until: Sequence[Sequence[str]], max_new_tokens: int = 256
    ) -> list[str]:
        """Greedy continuation of each context, cut at the first of its stop strings."""
        from bloomforge.model.generate import Sampling, generate_text

        out: list[str] = [""] * len(contexts)
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, stops in enumerate(until):
            groups.setdefault(tuple(stops), []).append(i)
        bs = self._batch_size()
        budget = self.max_length - max_new_tokens
        for stops, idx in groups.items():
            idx.sort(key=lambda i: -len(contexts[i]))
            for s in range(0, len(idx), bs):
                part = idx[s : s + bs]
                prompts = [self._fit(contexts[i], budget) for i in part]
                # lm-eval's HFLM generates max_gen_toks tokens even where the (re-encoded)
                # context leaves less room in max_length; so does this (ALiBi extrapolates).
                width = max(len(self.encode(p)) for p in prompts)
                sampling = Sampling(
                    max_new_tokens=max_new_tokens,
                    stop=list(stops),
                    eos_id=self.eos_id,
                    max_length=max(self.max_length, width + max_new_tokens),
                )
                texts = generate_text(self.model, self.tokenizer, prompts, sampling, self.device)
                for i, t in zip(part, texts, strict=True):
                    out[i] = t
        return out

    def _fit(self, context: str, budget: int) -> str:
        ids = self.encode(context)
        if len(ids) <= budget:
            return context
        # lm-eval's HFLM left-truncates the context to max_length - max_gen_toks tokens.
        return self.tokenizer.decode(ids[-max(budget, 1) :], skip_special_tokens=False)
