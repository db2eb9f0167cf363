"""Tokenizer fertility per language against reference tokenizers, as in BLOOM's Table 2.

In: evaluation text per language (`[LANG=]PATH` specs read through `bloomforge.documents.inputs`; a
`X.words` file beside `X.txt` gives the treebank's own word segmentation, line-aligned, words
separated by single spaces), our tokenizer and references (tokenizer.json files or folders, or
monolingual tokenizers trained here per language). Out: per language and tokenizer the tokens,
fertility (tokens per word), tokens per UTF-8 byte and per character; the relative difference
of ours to each reference; as json and as markdown tables.

Tokens are counted without special tokens (`add_special_tokens=False`), each line (document)
encoded on its own. Fertility is a ratio of sums over the language: Σ tokens / Σ words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from bloomforge.documents.inputs import InputSpec, ReadStats, iter_documents
from bloomforge.errors import BloomforgeError

OURS = "ours"
WORDS_SUFFIX = ".words"

# A reference is one tokenizer for every language, or (monolingual baselines) one per language.
Reference = Tokenizer | Mapping[str, Tokenizer]


@dataclass
class EvalText:
    """The evaluation documents of one language and their word, byte and character counts."""

    language: str
    texts: list[str] = field(default_factory=list)
    words: int = 0
    bytes: int = 0
    chars: int = 0
    word_sources: set[str] = field(default_factory=set)  # "treebank" (.words) / "whitespace"
    files: list[str] = field(default_factory=list)

    @property
    def word_source(self) -> str:
        return "+".join(sorted(self.word_sources))


def words_file(path: Path) -> Path | None:
    """`X.words` beside `X.txt`, if there is one."""
    if path.suffix != ".txt":
        return None
    candidate = path.with_suffix(WORDS_SUFFIX)
    return candidate if candidate.is_file() else None


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise BloomforgeError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from e


def count_words(segmented: str) -> int:
    """Words of one `.words` line: tokens separated by single spaces (U+00A0 stays inside)."""
    return sum(1 for w in segmented.split(" ") if w)


def load_eval_texts(
    specs: Sequence[InputSpec], stats: ReadStats | None = None
) -> dict[str, EvalText]:
    """Documents per language with their word counts (treebank words where a .words exists)."""
    out: dict[str, EvalText] = {}
    for spec in specs:
        wfile = words_file(spec.path)
        wlines = _read_words(wfile) if wfile else None
        for doc in iter_documents(spec, stats):
            ev = out.setdefault(doc.language, EvalText(doc.language))
            if str(spec.path) not in ev.files:
                ev.files.append(str(spec.path))
            if wlines is not None:
                if doc.line > len(wlines) or (not wlines[doc.line - 1].strip()):
                    raise BloomforgeError(
                        f"{wfile}:{doc.line}: no words for line {doc.line} of {spec.path} "
                        "(the .words file must be line-aligned with the .txt)"
                    )
                n_words = count_words(wlines[doc.line - 1])
                ev.word_sources.add("treebank")
            else:
                n_words = len(doc.text.split())
                ev.word_sources.add("whitespace")
            ev.texts.append(doc.text)
            ev.words += n_words
            ev.bytes += len(doc.text.encode("utf-8"))
            ev.chars += len(doc.text)
    if not out:
        raise BloomforgeError("the --text inputs hold no documents")
    return out


def count_tokens(tokenizer: Tokenizer, texts: Sequence[str]) -> int:
    """Tokens of each text encoded on its own, without special tokens."""
    encodings = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
    return sum(len(e.ids) for e in encodings)


def _measure(tokens: int, ev: EvalText) -> dict:
    return {
        "tokens": tokens,
        "fertility": tokens / ev.words if ev.words else None,
        "tokens_per_byte": tokens / ev.bytes,
        "tokens_per_char": tokens / ev.chars,
    }


def _for_language(ref: Reference, language: str) -> Tokenizer | None:
    return ref if isinstance(ref, Tokenizer) else ref.get(language)


def fertility_table(
    ours: Tokenizer, references: Mapping[str, Reference], texts: Mapping[str, EvalText]
) -> dict:
    """Per language: words, bytes, chars and, for ours and each reference, tokens, fertility,
    tokens/byte, tokens/char; for each reference `fertility_diff_pct` = (ours / ref - 1) * 100."""
    languages = {}
    for lang, ev in sorted(texts.items()):
        row: dict = {
            "lines": len(ev.texts),
            "words": ev.words,
            "word_source": ev.word_source,
            "bytes": ev.bytes,
            "chars": ev.chars,
            "files": ev.files,
            OURS: _measure(count_tokens(ours, ev.texts), ev),
            "references": {},
        }
        for name, ref in references.items():
            tok = _for_language(ref, lang)
            if tok is None:
                continue
            m = _measure(count_tokens(tok, ev.texts), ev)
            m["fertility_diff_pct"] = 100.0 * (row[OURS]["tokens"] / m["tokens"] - 1.0)
            row["references"][name] = m
        languages[lang] = row
    return {"languages": languages}


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def format_fertility(table: dict, reference_names: Sequence[str]) -> str:
    """Markdown: the fertility table (BLOOM Table 2 layout), then tokens per byte and char."""
    head = ["language", "words", f"fertility {OURS}"]
    for name in reference_names:
        head += [f"fertility {name}", f"diff % vs {name}"]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for lang, row in table["languages"].items():
        cells = [lang, f"{row['words']:,}", _f(row[OURS]["fertility"])]
        for name in reference_names:
            ref = row["references"].get(name)
            if ref is None:
                cells += ["-", "-"]
            else:
                cells += [_f(ref["fertility"]), f"{ref['fertility_diff_pct']:+.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _per_unit_table(table, reference_names)]
    return "\n".join(lines)


def _per_unit_table(table: dict, reference_names: Sequence[str]) -> str:
    names = [OURS, *reference_names]
    head = ["language", "words from"]
    head += [f"tokens/byte {n}" for n in names] + [f"tokens/char {n}" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|---|---" + "|---:" * (len(head) - 2) + "|"]
    for lang, row in table["languages"].items():
        measures = [row[OURS], *(row["references"].get(n) for n in reference_names)]
        cells = [lang, row["word_source"]]
        cells += [_f(m["tokens_per_byte"]) if m else "-" for m in measures]
        cells += [_f(m["tokens_per_char"]) if m else "-" for m in measures]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def monolingual_baselines(
    texts: Mapping[str, EvalText],
    train_specs: Mapping[str, Sequence[InputSpec]],
    vocab_size: int,
    max_bytes_per_language: int,
    seed: int = 0,
) -> tuple[dict[str, Tokenizer], dict]:
    """One tokenizer per language of `texts`, trained like ours (BPE, BLOOM pre-tokenizer) on
    that language alone: on `train_specs[lang]` where given, else on the evaluation text itself
    (recorded in the returned info as `trained_on_eval_text`)."""
    from bloomforge.tokenizer.train import train_on_texts, train_tokenizer

    tokenizers: dict[str, Tokenizer] = {}
    info: dict = {
        "vocab_size": vocab_size,
        "vocab_size_reached": {},  # below vocab_size where the text has too few pairs
        "train_text": {},
        "trained_on_eval_text": [],
    }
    for lang, ev in sorted(texts.items()):
        specs = train_specs.get(lang)
        if specs:
            # One language: α plays no part; the cap bounds what is read into the trainer.
            result = train_tokenizer(specs, vocab_size, 1.0, max_bytes_per_language, seed)
            tokenizers[lang] = result.tokenizer
            info["train_text"][lang] = [str(s.path) for s in specs]
        else:
            tokenizers[lang] = train_on_texts(ev.texts, vocab_size)
            info["train_text"][lang] = ev.files
            info["trained_on_eval_text"].append(lang)
        info["vocab_size_reached"][lang] = tokenizers[lang].get_vocab_size()
    return tokenizers, info
