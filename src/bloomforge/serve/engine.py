"""The serving engine: continuous batching of requests onto one KV-cached decode loop.

In: `Work` items (one per HTTP request: its rows, each one prompt x one sample, and its sampling
settings). Out: each row's new token ids, finish reason and, when asked, per-token log-probs,
reported after every decode step (streaming) and when the request is done (its future).

One worker repeats a step on a thread (the event loop keeps answering): rows whose client went
away or timed out leave the running batch; the running rows decode one token together; waiting
requests join (FIFO, up to `max_batch` rows): their prompts run as one left-padded prefill whose
keys/values join the batch's cache (`serve.batch`), so a new request never waits for a running
one to finish (continuous batching, as vLLM and TGI schedule). Scoring requests (`max_tokens`
0) are one forward and leave at once. Each request samples with its own settings and, with a
`seed`, its own `torch.Generator`, so its draws do not depend on its neighbours. Log-probs use
a log-softmax over all the model's output rows, as `bloomforge eval` and lm-eval's hf backend
score. Prefix-LM models (`attention: prefix_lm`) see the prompt (or its first `prefix` tokens)
as their prefix, as `bloomforge generate` and `bloomforge eval` do; a token inside the prefix
has no log-prob (it is visible to the position that would predict it). The queue is bounded
(`QueueFull` -> HTTP 429).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bloomforge.evaluation.scoring import LOGITS_CHUNK
from bloomforge.model.bloom import BloomLM, KVCache
from bloomforge.model.generate import Sampling, next_token
from bloomforge.serve.batch import RunningBatch
from bloomforge.serve.metrics import Metrics

log = logging.getLogger(__name__)

# One position's log-probs: (log p(token | before) or None, {token id: log p} of the chosen
# token and the top alternatives).
TokenLogprob = tuple[float | None, dict[int, float]]


@dataclass
class Limits:
    max_batch: int = 8  # rows decoding together
    max_queue: int = 64  # waiting rows before 429
    max_tokens: int = 512  # new tokens per row
    max_n: int = 16
    max_rows: int = 64  # prompts x n of one request
    max_logprobs: int = 20
    timeout_s: float = 120.0


class QueueFull(Exception):
    pass


@dataclass
class Row:
    prompt: list[int]
    max_tokens: int
    stops: list[str]
    prefix: int | None = None  # prefix-LM: prompt tokens in the prefix (None: all)
    new: list[int] = field(default_factory=list)
    finish: str = "length"
    prompt_logprobs: list[TokenLogprob] | None = None  # echo: one per prompt token
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    cancelled: str = ""  # why the row was stopped from outside ("disconnect", "timeout")
    done: bool = False


# Streaming: (row index in its request, new ids, their log-probs, finished) after each step.
StepEvent = tuple[int, list[int], list[TokenLogprob], bool]


@dataclass
class Work:
    rows: list[Row]
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # top alternatives per position; None: no log-probs
    echo: bool = False
    on_step: Callable[[StepEvent], None] | None = None  # streaming, called on the loop
    future: asyncio.Future | None = None
    generator: torch.Generator | None = None

    @property
    def scoring(self) -> bool:
        return all(r.max_tokens == 0 for r in self.rows)

    def cancel(self, reason: str) -> None:
        for r in self.rows:
            if not r.done:
                r.cancelled = reason


class Engine:
    def __init__(
        self,
        model: BloomLM,
        tokenizer: Tokenizer,
        name: str,
        device: torch.device | str = "cpu",
        limits: Limits | None = None,
    ) -> None:
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.device, self.limits = device, limits or Limits()
        self.cfg = model.cfg
        self.context = self.cfg.max_seq_len
        self.prefix_lm = self.cfg.attention == "prefix_lm"
        self.vocab = min(tokenizer.get_vocab_size(), self.cfg.padded_vocab_size)
        ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>")}
        self.eos_id = ids["</s>"]
        self.bos_id = ids["<s>"]
        self.pad_id = ids["<pad>"] if ids["<pad>"] is not None else (self.eos_id or 0)
        self.metrics = Metrics()
        self.waiting: deque[Work] = deque()
        self.batch = RunningBatch(self.model)
        self.running: list[tuple[Work, Row]] = []  # the batch's rows, in cache order
        self._wake: asyncio.Event | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bloomforge-serve")
        self._task: asyncio.Task | None = None

    # --- tokens ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def token_text(self, token: int) -> str:
        """One token as text; a piece of a UTF-8 character (not text alone) as its byte-level
        symbol, so that different tokens never share a name in `top_logprobs`."""
        text = self.decode([token], skip_special=False)
        return text if "\ufffd" not in text else self.tokenizer.id_to_token(token) or text

    def completion_text(self, row: Row, new: list[int] | None = None) -> str:
        """New tokens as text, cut before the first stop string."""
        text = self.decode(row.new if new is None else new)
        for stop in row.stops:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        return text

    # --- queue ----------------------------------------------------------------------------
    def queue_depth(self) -> int:
        return sum(len(w.rows) for w in self.waiting)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bloomforge-serve")
        self._task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.batch.keep([])
        self.running = []

    def submit(self, work: Work) -> asyncio.Future:
        """Queue `work`; its future resolves when every row is done. QueueFull when full."""
        if self.waiting and self.queue_depth() + len(work.rows) > self.limits.max_queue:
            raise QueueFull
        work.future = asyncio.get_running_loop().create_future()
        self.waiting.append(work)
        assert self._wake is not None
        self._wake.set()
        return work.future

    def _admit(self) -> list[Work]:
        """Waiting work that joins now. Generation: oldest first while its rows fit beside the
        running ones in `max_batch` (the oldest always joins an idle engine, however many rows
        it has). Scoring (one forward, it does not stay): up to `max_batch` rows a step, passing
        generation that has to wait."""
        taken: list[Work] = []
        rows, scoring, blocked = len(self.running), 0, False
        for w in list(self.waiting):
            if all(r.cancelled for r in w.rows):
                self.waiting.remove(w)
                self._count_cancelled(w.rows)
                self._resolve(w)
                continue
            if w.scoring:
                if scoring and scoring + len(w.rows) > self.limits.max_batch:
                    continue
                scoring += len(w.rows)
            else:
                if blocked or (rows and rows + len(w.rows) > self.limits.max_batch):
                    blocked = True
                    continue
                rows += len(w.rows)
            self.waiting.remove(w)
            taken.append(w)
        return taken

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self.waiting and not self.running:
                self._wake.clear()
                await self._wake.wait()
                continue
            joining = self._admit()
            try:
                await loop.run_in_executor(self._pool, self._step, joining, loop)
            except Exception as e:  # a bug or out of memory: fail these requests, keep serving
                log.exception("serve: a step failed; its requests get an error")
                failed = {id(w): w for w, _ in self.running} | {id(w): w for w in joining}
                self.running = []
                self.batch.keep([])
                for w in failed.values():
                    if w.future is not None and not w.future.done():
                        w.future.set_exception(e)

    def _resolve(self, work: Work) -> None:
        if work.future is not None and not work.future.done():
            work.future.set_result(work)

    def _count_cancelled(self, rows: list[Row]) -> None:
        for r in rows:
            if r.cancelled and not r.done:
                r.done = True
                self.metrics.cancelled[r.cancelled] = self.metrics.cancelled.get(r.cancelled, 0) + 1

    # --- model work (on the engine thread) ------------------------------------------------
    @torch.no_grad()
    def _step(self, joining: list[Work], loop: asyncio.AbstractEventLoop) -> None:
        touched: dict[int, Work] = {}
        # 1. rows stopped from outside leave the batch
        gone = [i for i, (_, r) in enumerate(self.running) if r.cancelled]
        if gone:
            for i in gone:
                w, r = self.running[i]
                self._count_cancelled([r])
                touched[id(w)] = w
            self._keep([i for i, (_, r) in enumerate(self.running) if not r.done])
        # 2. the running rows decode one token
        if self.running:
            hidden = self.batch.step()
            self.metrics.batches += 1
            self.batch.last = self._accept(self.running, hidden, touched)
            self._keep([i for i, (_, r) in enumerate(self.running) if not r.done])
        # 3. waiting requests join: scoring at once, generation through a prefill
        scoring = [w for w in joining if w.scoring]
        if scoring:
            self._score(scoring)
            touched.update((id(w), w) for w in scoring)
        generating = [w for w in joining if not w.scoring]
        if generating:
            self._prefill(generating, touched)
        # 4. report
        for w in touched.values():
            if w.on_step is not None:
                for j, r in enumerate(w.rows):
                    event = (j, list(r.new), list(r.new_logprobs), r.done)
                    loop.call_soon_threadsafe(w.on_step, event)
            if all(r.done for r in w.rows):
                loop.call_soon_threadsafe(self._resolve, w)
        self.metrics.running_rows = len(self.running)

    def _keep(self, rows: list[int]) -> None:
        self.running = [self.running[i] for i in rows]
        self.batch.keep(rows)

    def _prefill(self, works: list[Work], touched: dict[int, Work]) -> None:
        """Run the new prompts (left-padded, one forward), sample their first tokens and join
        the survivors to the running batch."""
        pairs = [(w, r) for w in works for r in w.rows]
        for w in works:
            if w.seed is not None and w.temperature > 0:
                w.generator = torch.Generator(device=self.device).manual_seed(w.seed)
            touched[id(w)] = w
        P = max(len(r.prompt) for _, r in pairs)
        ids = torch.full((len(pairs), P), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (_, r) in enumerate(pairs):
            ids[i, P - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, P - len(r.prompt) :] = 1
        self.metrics.prompt_tokens += sum(len(r.prompt) for _, r in pairs)
        kw = {}
        if self.prefix_lm:  # the prefix's columns, left padding included (as `generate`)
            cols = [P - len(r.prompt) + self._prefix(r) for _, r in pairs]
            kw["prefix_len"] = torch.tensor(cols, dtype=torch.long, device=self.device)
        dtype = next(self.model.parameters()).dtype
        cache = KVCache(self.cfg, len(pairs), P, self.device, dtype)
        mask = mask.to(self.device)
        hidden = self.model(
            ids.to(self.device), attention_mask=mask, cache=cache, return_hidden=True, **kw
        )  # (n, P, h)
        self.metrics.batches += 1
        for i, (w, r) in enumerate(pairs):
            if w.echo and w.logprobs is not None:
                h = hidden[i, P - len(r.prompt) :]
                r.prompt_logprobs = self._position_logprobs(h, r.prompt, w.logprobs, r.prefix)
        self._accept(pairs, hidden[:, -1], touched)
        keep = [i for i, (_, r) in enumerate(pairs) if not r.done]
        if not keep:
            return
        idx = torch.tensor(keep, device=mask.device)
        live = [pairs[i] for i in keep]
        room = max(r.max_tokens - len(r.new) for _, r in self.running + live)
        self.batch.join(
            cache.k.index_select(1, idx),
            cache.v.index_select(1, idx),
            mask.index_select(0, idx),
            torch.tensor([r.new[-1] for _, r in live], device=mask.device),
            room,
        )
        self.running += live

    def _prefix(self, r: Row) -> int:
        return len(r.prompt) if r.prefix is None else r.prefix

    def _accept(
        self, pairs: list[tuple[Work, Row]], hidden: Tensor, touched: dict[int, Work]
    ) -> Tensor:
        """Sample each row's next token (returned, (n,)) from its hidden state (n, h); end
        finished rows."""
        logits = self.model.logits(hidden).float()  # (n, V)
        by_work: dict[int, list[int]] = {}
        for i, (w, _) in enumerate(pairs):
            by_work.setdefault(id(w), []).append(i)
        nxt = torch.empty(len(pairs), dtype=torch.long, device=logits.device)
        greedy = [i for i, (w, _) in enumerate(pairs) if w.temperature == 0]
        if greedy:
            g = torch.tensor(greedy, device=logits.device)
            nxt[g] = logits[g, : self.vocab].argmax(dim=-1)
        for rows in by_work.values():
            w = pairs[rows[0]][0]
            if w.temperature == 0:
                continue
            s = Sampling(temperature=w.temperature, top_k=max(w.top_k, 0), top_p=w.top_p)
            idx = torch.tensor(rows, device=logits.device)
            nxt[idx] = next_token(logits[idx], s, w.generator, self.vocab)
        tokens = nxt.tolist()
        want = [i for i, (w, _) in enumerate(pairs) if w.logprobs is not None]
        lps: dict[int, TokenLogprob] = {}
        for top in {pairs[i][0].logprobs for i in want}:
            rows = [i for i in want if pairs[i][0].logprobs == top]
            got = self._choose(logits[rows], [tokens[i] for i in rows], top or 0)
            lps.update(zip(rows, got, strict=True))
        for i, (w, r) in enumerate(pairs):
            touched[id(w)] = w
            t = tokens[i]
            if self.eos_id is not None and t == self.eos_id:
                r.finish, r.done = "stop", True
                continue
            r.new.append(t)
            if i in lps:
                r.new_logprobs.append(lps[i])
            self.metrics.generated_tokens += 1
            if r.stops and any(s in self.decode(r.new) for s in r.stops):
                r.finish, r.done = "stop", True
            elif len(r.new) >= r.max_tokens:
                r.finish, r.done = "length", True
        return nxt

    def _choose(self, logits: Tensor, chosen: list[int], top: int) -> list[TokenLogprob]:
        """(log p(chosen), {chosen and the `top` likeliest: log p}) per row of logits (n, V)."""
        lp = torch.log_softmax(logits.float(), dim=-1)  # over every output row, as eval
        picked = lp.gather(1, torch.tensor(chosen, device=lp.device)[:, None]).squeeze(1)
        k = min(top, self.vocab)
        vals, idx = lp[:, : self.vocab].topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0])
        out = []
        for c, p, vs, ix in zip(chosen, picked.tolist(), vals.tolist(), idx.tolist(), strict=True):
            out.append((p, {c: p, **dict(zip(ix, vs, strict=True))}))
        return out

    def _position_logprobs(
        self, hidden: Tensor, seq: list[int], top: int, prefix: int | None
    ) -> list[TokenLogprob]:
        """Per token of `seq`, its log-prob given those before, from the hidden states (len(seq),
        h) of a forward over `seq`. The first token, and (prefix-LM) every token inside the
        prefix, has none: (None, {})."""
        first = 1
        if self.prefix_lm:
            first = max(1, len(seq) if prefix is None else prefix)
        out: list[TokenLogprob] = [(None, {})] * min(first, len(seq))
        step = max(1, LOGITS_CHUNK // self.cfg.padded_vocab_size)
        for a in range(first - 1, len(seq) - 1, step):
            b = min(a + step, len(seq) - 1)
            out += self._choose(self.model.logits(hidden[a:b]), seq[a + 1 : b + 1], top)
        return out

    def _score(self, works: list[Work]) -> None:
        """Echo log-probs of prompts (max_tokens 0): one right-padded forward."""
        pairs = [(w, r) for w in works for r in w.rows]
        width = max(len(r.prompt) for _, r in pairs)
        ids = torch.full((len(pairs), width), self.pad_id, dtype=torch.long)
        for i, (_, r) in enumerate(pairs):
            ids[i, : len(r.prompt)] = torch.tensor(r.prompt)
        kw = {}
        if self.prefix_lm:  # right padding: the prefix starts at column 0
            cols = [self._prefix(r) for _, r in pairs]
            kw["prefix_len"] = torch.tensor(cols, dtype=torch.long, device=self.device)
        # causal attention never looks right, so the padding needs no mask (as eval scores)
        hidden = self.model(ids.to(self.device), return_hidden=True, **kw)  # (n, T, h)
        self.metrics.batches += 1
        self.metrics.prompt_tokens += sum(len(r.prompt) for _, r in pairs)
        for i, (w, r) in enumerate(pairs):
            h = hidden[i, : len(r.prompt)]
            r.prompt_logprobs = self._position_logprobs(h, r.prompt, w.logprobs or 0, r.prefix)
            r.finish, r.done = "length", True
