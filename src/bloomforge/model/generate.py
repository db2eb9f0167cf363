"""Text generation with a KV cache: greedy, temperature, top-k, top-p, stop strings, batches.

In: a `BloomLM`, prompt token ids (B, T) left-padded with an attention mask, or prompt strings and
a tokenizer. Out: the prompt plus up to `max_new_tokens` new ids per row (finished rows padded
with `pad_id`), or the decoded continuations. `temperature == 0` means greedy. Sampling draws
from a `torch.Generator` seeded by `seed`, so a seed reproduces a sample. A prefix-LM model
(`attention: prefix_lm`) sees the prompt as its prefix (bidirectional attention inside it, its T
columns left padding included); the generated tokens are causal after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer
from torch import Tensor

from bloomforge.errors import BloomforgeError
from bloomforge.model.bloom import BloomLM, KVCache

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

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 0:
            raise ValueError("top_k and max_new_tokens must be >= 0")


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
) -> Tensor:
    """Continue left-padded prompts (B, T); returns (B, T + n) with n <= max_new_tokens.

    `should_stop(row, new_ids)` lets a caller end a row early (stop strings).
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
) -> list[str]:
    """Continuations of `prompts` (batched, left-padded), cut at the first stop string."""
    s = sampling or Sampling()
    encoded = [tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
    if any(not e for e in encoded):
        raise BloomforgeError("every prompt must encode to at least one token")
    width = max(len(e) for e in encoded)
    ids = torch.full((len(prompts), width), s.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(encoded):
        ids[row, width - len(e) :] = torch.tensor(e)
        mask[row, width - len(e) :] = 1

    def finished_by_stop(row: int, new_ids: Tensor) -> bool:
        return any(stop in tokenizer.decode(new_ids.tolist()) for stop in s.stop)

    out = generate(
        model,
        ids.to(device),
        mask.to(device),
        s,
        vocab_limit=tokenizer.get_vocab_size(),
        should_stop=finished_by_stop if s.stop else None,
    )
    texts = []
    for row in out[:, width:].tolist():
        if s.eos_id is not None and s.eos_id in row:
            row = row[: row.index(s.eos_id)]
        text = tokenizer.decode(row, skip_special_tokens=True)
        for stop in s.stop:
            cut = text.find(stop)
            text = text if cut < 0 else text[:cut]
        texts.append(text)
    return texts
