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
continuation positions go through the output projection, and the softmax covers the tokenizer's
vocabulary, not the embedding's padding rows. `bloomforge eval` and the lm-eval model class both
call this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from bloomforge.model.bloom import BloomLM

CPU_BATCH_SIZE = 16  # `--batch-size auto` on CPU: no OOM signal to probe, so a fixed default
AUTO_START = 512  # `--batch-size auto` on CUDA: start here, halve on out-of-memory

TokenPair = tuple[list[int], list[int]]
Progress = Callable[[int], None]


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
    model: BloomLM
    tokenizer: Tokenizer
    device: torch.device | str = "cpu"
    batch_size: int | str = "auto"
    max_length: int | None = None  # None: the model's max_seq_len
    _found_batch: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.model.eval()
        if self.max_length is None:
            self.max_length = self.model.cfg.max_seq_len
        self.vocab_limit = min(self.tokenizer.get_vocab_size(), self.model.cfg.padded_vocab_size)
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
        """lm-eval's split: spaces move to the continuation; encode whole, cut at the context."""
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
        n_ctx = len(self.encode(context))
        return whole[:n_ctx], whole[n_ctx:]

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
        # lm-eval's Collator order: longest first (OOM shows at once), ties by token content.
        order = sorted(
            range(len(requests)),
            key=lambda i: (
                -len(requests[i][0]) - len(requests[i][1]),
                tuple(requests[i][0] + requests[i][1]),
            ),
        )
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        start = 0
        while start < len(order):
            bs = self._batch_size()
            chunk = order[start : start + bs]
            try:
                scored = self._score_batch([requests[i] for i in chunk])
            except torch.OutOfMemoryError:
                if self.batch_size != "auto" or bs == 1:
                    raise
                self._found_batch = bs // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, r in zip(chunk, scored, strict=True):
                results[i] = r
            start += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return results

    def _batch_size(self) -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        if self._found_batch is None:
            on_gpu = torch.device(self.device).type == "cuda"
            self._found_batch = AUTO_START if on_gpu else CPU_BATCH_SIZE
        return self._found_batch

    def _score_batch(self, batch: Sequence[TokenPair]) -> list[tuple[float, bool]]:
        L = self.max_length
        inputs, cont_lens = [], []
        for ctx, cont in batch:
            if len(cont) > L:
                raise ValueError(f"continuation of {len(cont)} tokens exceeds context {L}")
            inputs.append((ctx + cont)[-(L + 1) :][:-1])  # lm-eval: truncate from the left
            cont_lens.append(len(cont))
        width = max(len(x) for x in inputs)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        for row, x in enumerate(inputs):
            ids[row, : len(x)] = torch.tensor(x)  # right padding: real tokens never see it
        hidden = self.model(ids.to(self.device), return_hidden=True)  # (B, T, h)
        rows, cols, targets = [], [], []
        for row, (x, n) in enumerate(zip(inputs, cont_lens, strict=True)):
            rows += [row] * n
            cols += range(len(x) - n, len(x))
            targets += batch[row][1]
        dev = hidden.device
        picked = hidden[torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)]  # (N, h)
        logits = self.model.logits(picked)[:, : self.vocab_limit].float()
        logprobs = torch.log_softmax(logits, dim=-1)  # (N, V)
        target = torch.tensor(targets, device=logprobs.device)
        token_ll = logprobs.gather(1, target[:, None]).squeeze(1)
        greedy = logprobs.argmax(dim=-1) == target
        out, at = [], 0
        for n in cont_lens:
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
            sampling = Sampling(max_new_tokens=max_new_tokens, stop=list(stops), eos_id=self.eos_id)
            for s in range(0, len(idx), bs):
                part = idx[s : s + bs]
                prompts = [self._fit(contexts[i], budget) for i in part]
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
