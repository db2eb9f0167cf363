"""The serving engine: waiting requests batched dynamically onto the model's KV-cache generation.

In: `Work` items (one per HTTP request: its rows, each one prompt x one sample, and its sampling
settings). Out: each row's new token ids, finish reason and, when asked, per-token log-probs.

One worker takes up to `max_batch` waiting rows whose sampling settings agree (greedy rows always
agree; a seeded request runs alone so its draws do not depend on its neighbours) and runs them
as one left-padded batch through `bloomforge.model.generate.generate`, on a thread so the event
loop keeps answering. Per-row stops (max_tokens, stop strings, a closed client) go through
`generate`'s `should_stop`. Log-probs are one more forward over prompt + new tokens, with a
log-softmax over all the model's output rows, as `bloomforge eval` and lm-eval's hf backend
score. The queue is bounded (`QueueFull` -> HTTP 429).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from bloomforge.evaluation.scoring import LOGITS_CHUNK
from bloomforge.model.bloom import BloomLM
from bloomforge.model.generate import Sampling, generate

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Limits:
    max_batch: int = 8  # rows per forward
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
    new: list[int] = field(default_factory=list)
    finish: str = "length"
    logprobs: list[tuple[float | None, dict[str, float]]] | None = None
    cancelled: bool = False


@dataclass
class Work:
    rows: list[Row]
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # top alternatives per position; None: no log-probs
    on_tokens: Callable[[int, list[int]], None] | None = None  # streaming, on the loop
    future: asyncio.Future | None = None

    def key(self) -> tuple:
        if all(r.max_tokens == 0 for r in self.rows):
            return ("score",)
        if self.temperature > 0 and self.seed is not None:
            return ("alone", id(self))
        if self.temperature == 0:
            return ("greedy",)
        return ("sample", self.temperature, self.top_k, self.top_p)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.prompt_tokens = self.generated_tokens = self.batches = 0
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        self.latency_sum += seconds
        i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))
        self.latency[i] += 1

    def text(self, queue_depth: int) -> str:
        out = ["# TYPE bloomforge_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            out.append(f'bloomforge_requests_total{{path="{path}",status="{status}"}} {n}')
        out += [
            "# TYPE bloomforge_prompt_tokens_total counter",
            f"bloomforge_prompt_tokens_total {self.prompt_tokens}",
            "# TYPE bloomforge_generated_tokens_total counter",
            f"bloomforge_generated_tokens_total {self.generated_tokens}",
            "# TYPE bloomforge_batches_total counter",
            f"bloomforge_batches_total {self.batches}",
            "# TYPE bloomforge_queue_depth gauge",
            f"bloomforge_queue_depth {queue_depth}",
            "# TYPE bloomforge_request_seconds histogram",
        ]
        total = 0
        for b, n in zip((*LATENCY_BUCKETS, "+Inf"), self.latency, strict=True):
            total += n
            out.append(f'bloomforge_request_seconds_bucket{{le="{b}"}} {total}')
        out += [
            f"bloomforge_request_seconds_sum {self.latency_sum:.6f}",
            f"bloomforge_request_seconds_count {total}",
        ]
        return "\n".join(out) + "\n"


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
        self.vocab = min(tokenizer.get_vocab_size(), self.cfg.padded_vocab_size)
        ids = {t: tokenizer.token_to_id(t) for t in ("<s>", "</s>", "<pad>")}
        self.eos_id = ids["</s>"]
        self.bos_id = ids["<s>"]
        self.pad_id = ids["<pad>"] if ids["<pad>"] is not None else (self.eos_id or 0)
        self.metrics = Metrics()
        self.waiting: deque[Work] = deque()
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

    def completion_text(self, row: Row) -> str:
        """New tokens as text, cut before the first stop string."""
        text = self.decode(row.new)
        for stop in row.stops:
            cut = text.find(stop)
            if cut >= 0:
                text, row.finish = text[:cut], "stop"
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

    def submit(self, work: Work) -> asyncio.Future:
        """Queue `work`; its future resolves when every row is done. QueueFull when full."""
        if self.waiting and self.queue_depth() + len(work.rows) > self.limits.max_queue:
            raise QueueFull
        work.future = asyncio.get_running_loop().create_future()
        self.waiting.append(work)
        assert self._wake is not None
        self._wake.set()
        return work.future

    def _take(self) -> list[Work]:
        """The oldest waiting work and those after it that can share its batch."""
        first = self.waiting.popleft()
        batch, key = [first], first.key()
        rows = len(first.rows)
        width = max(len(r.prompt) for r in first.rows)
        new = max(r.max_tokens for r in first.rows)
        for w in list(self.waiting):
            if rows + len(w.rows) > self.limits.max_batch or w.key() != key:
                continue
            w_width = max(width, *(len(r.prompt) for r in w.rows))
            w_new = max(new, *(r.max_tokens for r in w.rows))
            if key != ("score",) and w_width + w_new > self.context:
                continue  # left padding to the longest prompt would not fit the context
            self.waiting.remove(w)
            batch.append(w)
            rows, width, new = rows + len(w.rows), w_width, w_new
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._take()
            batch = [w for w in batch if not all(r.cancelled for r in w.rows)]
            if not batch:
                continue
            try:
                await loop.run_in_executor(self._pool, self._run, batch, loop)
            except Exception as e:  # a bug or out of memory: fail these requests, keep serving
                for w in batch:
                    if w.future is not None and not w.future.done():
                        w.future.set_exception(e)
                continue
            self.metrics.batches += 1
            for w in batch:
                if w.future is not None and not w.future.done():
                    w.future.set_result(w)

    # --- model work (on the engine thread) ------------------------------------------------
    def _run(self, batch: list[Work], loop: asyncio.AbstractEventLoop) -> None:
        rows = [r for w in batch for r in w.rows]
        self.metrics.prompt_tokens += sum(len(r.prompt) for r in rows)
        if batch[0].key() != ("score",):
            self._generate(batch, rows, loop)
        self.metrics.generated_tokens += sum(len(r.new) for r in rows)
        for w in batch:
            if w.logprobs is not None:
                for r, lp in zip(
                    w.rows,
                    self.logprobs([r.prompt + r.new for r in w.rows], w.logprobs),
                    strict=True,
                ):
                    r.logprobs = lp

    @torch.no_grad()
    def _generate(
        self, batch: list[Work], rows: list[Row], loop: asyncio.AbstractEventLoop
    ) -> None:
        w0 = batch[0]
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, width - len(r.prompt) :] = 1
        sampling = Sampling(
            max_new_tokens=max(r.max_tokens for r in rows),
            temperature=w0.temperature,
            top_k=max(w0.top_k, 0),
            top_p=w0.top_p,
            seed=w0.seed,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
        )

        def should_stop(i: int, new_ids: torch.Tensor) -> bool:
            r = rows[i]
            if r.cancelled or new_ids.shape[0] >= r.max_tokens:
                return True
            return bool(r.stops) and any(s in self.decode(new_ids.tolist()) for s in r.stops)

        owners = [(w, j) for w in batch for j in range(len(w.rows))]

        def on_step(new_ids: torch.Tensor, done: torch.Tensor) -> None:
            for i, (w, j) in enumerate(owners):
                if w.on_tokens is not None and not rows[i].cancelled:
                    loop.call_soon_threadsafe(
                        w.on_tokens, j, self._kept(new_ids[i].tolist(), rows[i])
                    )

        out = generate(
            self.model,
            ids.to(self.device),
            mask.to(self.device),
            sampling,
            vocab_limit=self.vocab,
            should_stop=should_stop,
            on_step=on_step if any(w.on_tokens for w in batch) else None,
        )
        for i, r in enumerate(rows):
            r.new = self._kept(out[i, width:].tolist(), r)

    def _kept(self, new: list[int], r: Row) -> list[int]:
        """A row's new ids up to its own max_tokens, ending before EOS (finish: stop)."""
        new = new[: r.max_tokens]
        if self.eos_id is not None and self.eos_id in new:
            r.finish = "stop"
            return new[: new.index(self.eos_id)]
        return new

    @torch.no_grad()
    def logprobs(
        self, seqs: list[list[int]], top: int
    ) -> list[list[tuple[float | None, dict[str, float]]]]:
        """Per sequence, per position: (log p(token | before), top alternatives); the first
        position has no context: (None, {}). Right-padded batch; causal attention never looks
        right, so the padding needs no mask (as `bloomforge eval` scores)."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        hidden = self.model(ids.to(self.device), return_hidden=True)  # (B, T, h)
        V = self.cfg.padded_vocab_size
        step = max(1, LOGITS_CHUNK // V)
        out = []
        for i, s in enumerate(seqs):
            rows: list[tuple[float | None, dict[str, float]]] = [(None, {})]
            target = torch.tensor(s[1:], device=hidden.device)
            for a in range(0, len(s) - 1, step):
                logits = self.model.logits(hidden[i, a : min(a + step, len(s) - 1)]).float()
                lp = torch.log_softmax(logits, dim=-1)  # over every output row, as eval
                chosen = lp.gather(1, target[a : a + step, None]).squeeze(1).tolist()
                k = min(top, self.vocab)
                vals, idx = lp[:, : self.vocab].topk(k, dim=-1) if k else (lp[:, :0], lp[:, :0])
                for p, c, vs, ix in zip(
                    range(a, a + len(chosen)), chosen, vals.tolist(), idx.tolist(), strict=True
                ):
                    alts: dict[str, float] = {}
                    for t, v in [(s[p + 1], c), *zip(ix, vs, strict=True)]:
                        key = self.token_text(int(t))
                        alts[key] = max(alts.get(key, float("-inf")), v)
                    rows.append((c, alts))
            out.append(rows)
        return out
