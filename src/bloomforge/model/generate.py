"""Text generation with a KV cache: greedy, temperature, top-k, top-p, stop strings, batches.

In: a `BloomLM`, prompt token ids (B, T) left-padded with an attention mask, or prompt strings and
a tokenizer. Out: the prompt plus up to `max_new_tokens` new ids per row (finished rows padded
with `pad_id`), or the decoded continuations, optionally streamed as they are decoded
(`on_text`). `temperature == 0` means greedy. Sampling draws from a `torch.Generator` seeded by
`seed`, so a seed reproduces a sample. A prefix-LM model (`attention: prefix_lm`) sees the prompt
as its prefix (bidirectional attention inside it, its T columns left padding included); the
generated tokens are causal after it.

Length: prompt + new tokens may not exceed `max_length`, by default the context the model was
trained on (`max_seq_len`); a longer `max_length` asks for extrapolation past it, which ALiBi
was designed for (Press et al. 2022, "Train Short, Test Long") and learned positions cannot do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bloomforge.errors import BloomforgeError
from bloomforge.model.bloom import BloomLM, KVCache

if TYPE_CHECKING:
    from bloomforge.model.config import ModelConfig

PAD_ID = 3  # BLOOM's <pad>
EOS_ID = 2  # BLOOM's </s>


@dataclass
class Sampling:
    max_new_tokens: int = 20
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    eos_id: int | None = EOS_ID
    pad_id: int = PAD_ID
    stop: list[str] = field(default_factory=list)
    max_length: int | None = None  # prompt + new tokens; None: the model's max_seq_len

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 0:
            raise ValueError("top_k and max_new_tokens must be >= 0")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")


class GenerationLengthError(BloomforgeError):
    """Prompt + new tokens do not fit the allowed length. `describe(...)` words it with the
    caller's names for the settings (the CLI's flags); str() uses the Python names."""

    def __init__(self, what: str, value: int, limit: int, prompt: int, cfg: ModelConfig) -> None:
        self.what, self.value, self.limit, self.prompt = what, value, limit, prompt
        self.context, self.learned = cfg.max_seq_len, cfg.position == "learned"
        super().__init__(self.describe())

    def describe(
        self, new: str = "max_new_tokens", length: str = "max_length", prompt: str = "prompt"
    ) -> str:
        ctx = f"the model's context of {self.context} tokens (max_seq_len)"
        if self.what == "max_length":
            return f"{length}={self.value}: beyond {ctx}, where its learned positions end"
        bound, more = f"{length}={self.limit}", ""
        if self.limit == self.context:
            bound = ctx
            if not self.learned:
                more = f"; {length} N allows more (ALiBi extrapolation past the training length)"
        if self.what == "prompt":
            return f"{prompt}: {self.prompt} tokens leave no room for new tokens in {bound}{more}"
        room = self.limit - self.prompt
        return (
            f"{new}={self.value}: at most {room} new tokens fit after a {self.prompt}-token "
            f"prompt in {bound}{more}"
        )


def length_limit(cfg: ModelConfig, max_length: int | None) -> int:
    """Most tokens (prompt + new) one row may reach: `max_length`, by default max_seq_len."""
    if max_length is None:
        return cfg.max_seq_len
    if max_length > cfg.max_seq_len and cfg.position == "learned":
        raise GenerationLengthError("max_length", max_length, max_length, 0, cfg)
    return max_length


def check_length(cfg: ModelConfig, prompt_tokens: int, s: Sampling) -> None:
    """Raise GenerationLengthError unless prompt + max_new_tokens fit `length_limit`."""
    limit = length_limit(cfg, s.max_length)
    if prompt_tokens + min(s.max_new_tokens, 1) > limit:  # no room for even one new token
        raise GenerationLengthError("prompt", prompt_tokens, limit, prompt_tokens, cfg)
    if prompt_tokens + s.max_new_tokens > limit:
        raise GenerationLengthError("max_new_tokens", s.max_new_tokens, limit, prompt_tokens, cfg)


def next_token(
    logits: Tensor, s: Sampling, generator: torch.Generator | None, vocab_limit: int | None
) -> Tensor:
    """Pick one id per row from last-position logits (B, V)."""
    logits = logits.float()
    if vocab_limit is not None and vocab_limit < logits.shape[-1]:
        logits[:, vocab_limit:] = float("-inf")  # never emit the padding rows of the embedding
    if s.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / s.temperature
    if s.top_k:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token once the mass strictly before it already reaches top_p (keeps >= 1).
        drop = (probs.cumsum(dim=-1) - probs) >= s.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: BloomLM,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    sampling: Sampling | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
    should_stop: Callable[[int, Tensor], bool] | None = None,
    on_step: Callable[[Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Continue left-padded prompts (B, T); returns (B, T + n) with n <= max_new_tokens.

    `should_stop(row, new_ids)` lets a caller end a row early (stop strings); `on_step(new_ids,
    done)` sees the (B, n) new ids and the finished rows after every step (streaming). The
    length limit is the caller's to check (`check_length`; `generate_text` does): rows that
    each fit may share a batch whose width + max_new_tokens does not (a server's requests).
    """
    s = sampling or Sampling()
    B, T = input_ids.shape
    device = input_ids.device
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    generator = None
    if s.seed is not None:
        generator = torch.Generator(device=device).manual_seed(s.seed)
    dtype = next(model.parameters()).dtype
    cache = KVCache(model.cfg, B, T + s.max_new_tokens, device, dtype) if use_cache else None
    # Prefix-LM: prompt columns [0, T) are visible to every query (padding stays masked); with
    # or without the cache, every later column is causal.
    prefix: dict[str, Tensor] = {}
    if model.cfg.attention == "prefix_lm":
        prefix["prefix_len"] = torch.full((B,), T, dtype=torch.long, device=device)
    ids = input_ids
    done = torch.zeros(B, dtype=torch.bool, device=device)
    step_input = ids
    for _ in range(s.max_new_tokens):
        logits = model(step_input, attention_mask=mask, cache=cache, **prefix)[:, -1]
        nxt = next_token(logits, s, generator, vocab_limit)
        nxt = torch.where(done, torch.full_like(nxt, s.pad_id), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt[:, None])], dim=1)
        if s.eos_id is not None:
            done |= nxt == s.eos_id
        if should_stop is not None:
            for row in range(B):
                if not done[row] and should_stop(row, ids[row, T:]):
                    done[row] = True
        if on_step is not None:
            on_step(ids[:, T:], done.clone())
        if bool(done.all()):
            break
        step_input = nxt[:, None] if use_cache else ids
    return ids


def generate_text(
    model: BloomLM,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    sampling: Sampling | None = None,
    device: torch.device | str = "cpu",
    on_text: Callable[[int, str, bool], None] | None = None,
) -> list[str]:
    """Continuations of `prompts` (batched, left-padded), cut at the first stop string.

    `on_text(row, text, finished)` streams each row: `text` is what became printable since the
    last call (held back: an incomplete UTF-8 character, a possible start of a stop string);
    the last call of a row has `finished=True`. The pieces of a row add up to its returned text.
    """
    from bloomforge.model.config import check_vocab

    s = sampling or Sampling()
    check_vocab(tokenizer, model.cfg, "the tokenizer")
    encoded = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    if any(not e for e in encoded):
        raise BloomforgeError("every prompt must encode to at least one token")
    width = max(len(e) for e in encoded)
    check_length(model.cfg, width, s)
    ids = torch.full((len(prompts), width), s.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, width - len(e) :] = torch.tensor(e)
        mask[row, width - len(e) :] = 1

    def finished_by_stop(row: int, new_ids: Tensor) -> bool:
        return any(stop in tokenizer.decode(new_ids.tolist()) for stop in s.stop)

    def text_of(row: list[int]) -> str:
        if s.eos_id is not None and s.eos_id in row:
            row = row[: row.index(s.eos_id)]
        text = tokenizer.decode(row, skip_special_tokens=True)
        for stop in s.stop:
            cut = text.find(stop)
            text = text if cut < 0 else text[:cut]
        return text

    streams = None if on_text is None else _Streams(len(prompts), s.stop, on_text)

    def on_step(new_ids: Tensor, done: Tensor) -> None:
        assert streams is not None
        for row in streams.open_rows():
            streams.update(row, text_of(new_ids[row].tolist()), bool(done[row]))

    out = generate(
        model,
        ids.to(device),
        mask.to(device),
        s,
        vocab_limit=tokenizer.get_vocab_size(),
        should_stop=finished_by_stop if s.stop else None,
        on_step=on_step if streams is not None else None,
    )
    texts = [text_of(row) for row in out[:, width:].tolist()]
    if streams is not None:
        for row in streams.open_rows():
            streams.update(row, texts[row], finished=True)
    return texts


class _Streams:
    """Incremental text of each row (as transformers' TextStreamer, per row): the part of the
    row's decoded text that is final, passed to `emit` as it grows."""

    def __init__(self, rows: int, stops: Sequence[str], emit: Callable[[int, str, bool], None]):
        self.sent = [""] * rows
        self.closed = [False] * rows
        self.stops, self.emit = list(stops), emit

    def open_rows(self) -> list[int]:
        return [row for row, closed in enumerate(self.closed) if not closed]

    def update(self, row: int, text: str, finished: bool) -> None:
        sent = self.sent[row]
        if not finished:
            text = text.rstrip("\ufffd")  # an incomplete UTF-8 sequence: wait for its bytes
            text = text[: len(text) - self._stop_start(text)]
            # Unchanged, or a decoder that rewrites earlier text (not byte-level): wait.
            if text == sent or not text.startswith(sent):
                return
        self.emit(row, text[len(sent) :], finished)
        self.sent[row], self.closed[row] = text, finished

    def _stop_start(self, text: str) -> int:
        """Length of the longest end of `text` that may begin a stop string: held back."""
        starts = [
            n
            for stop in self.stops
            for n in range(1, min(len(stop), len(text) + 1))
            if text.endswith(stop[:n])
        ]
        return max(starts, default=0)


def print_streamed(
    prompts: Sequence[str], write: Callable[[str], object]
) -> Callable[[int, str, bool], None]:
    """An `on_text` for a terminal: the first prompt's continuation is written as it is decoded
    (as transformers' TextStreamer, which streams one sequence); every later prompt is written
    whole, in prompt order, once it and those before it are finished. Each prompt's line is
    `prompt + continuation`, as without streaming. `write` should flush."""
    texts = [""] * len(prompts)
    finished = [False] * len(prompts)
    printed = 0  # rows written in full; the first prompt is written with its first text

    def on_text(row: int, text: str, done: bool) -> None:
        nonlocal printed
        if row == 0:
            first = prompts[0] if not texts[0] and not finished[0] else ""
            write(first + text + ("\n" if done else ""))
        texts[row] += text
        finished[row] = done
        while printed < len(prompts) and finished[printed]:
            if printed > 0:
                write(prompts[printed] + texts[printed] + "\n")
            printed += 1

    return on_text
