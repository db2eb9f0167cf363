"""Text keys of deduplication: normalised text and URL hashes, template-line keys, SimHash.

In: a document's text, URL and language. Out: 64-bit keys (xxhash's xxh64, 0 meaning "no key")
and 64-bit SimHash fingerprints (numpy). Pure functions, shared by the signature stage, the
removal stage, the tests and the benchmark.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import xxhash

# ROOTS' exact-duplicate normalisation (BigScience data-preparation): case, Unicode forms,
# whitespace, punctuation and digits do not make two documents different.
_NOT_LETTERS = re.compile(r"[\W\d_]+")
_WORDS = re.compile(r"\w+")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def hash64(text: str) -> int:
    """xxh64 of the UTF-8 text, never 0 (0 marks a document without that key)."""
    return xxhash.xxh64_intdigest(text.encode("utf-8", "surrogatepass")) or 1


def normalize_text(text: str) -> str:
    return _NOT_LETTERS.sub("", unicodedata.normalize("NFKC", text).lower())


def text_key(text: str) -> int:
    """Key of the normalised text; 0 when nothing is left (such documents are not compared)."""
    norm = normalize_text(text)
    return hash64(norm) if norm else 0


def normalize_url(url: str) -> str:
    """Lowercase scheme and host, no `www.`, default port, fragment or trailing slash."""
    url = url.strip()
    if not url:
        return ""
    parts = urlsplit(url if "://" in url else "http://" + url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").removeprefix("www.")
    port = parts.port if _safe_port(parts) else None
    netloc = host if port is None or str(port) == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def _safe_port(parts) -> bool:
    try:
        return parts.port is not None
    except ValueError:  # "host:notaport": keep the URL, drop the port
        return False


def url_key(url: object) -> int:
    norm = normalize_url(url) if isinstance(url, str) else ""
    return hash64(norm) if norm else 0


def template_line_key(language: str, line: str) -> int:
    """Key of one stripped line within one language (template lines are counted per language)."""
    return hash64(language + "\0" + line)


def template_line_keys(text: str, language: str, min_chars: int) -> list[int]:
    """Keys of the lines of `text` that are long enough to count as template candidates."""
    keys = []
    for line in text.split("\n"):
        line = line.strip()
        if len(line) >= min_chars:
            keys.append(template_line_key(language, line))
    return keys


def strip_template_lines(
    text: str, language: str, templates: np.ndarray, min_chars: int
) -> tuple[str, int]:
    """`text` without the lines whose key is in the sorted array `templates`; lines removed."""
    if templates.size == 0:
        return text, 0
    kept, removed = [], 0
    for line in text.split("\n"):
        stripped = line.strip()
        if len(stripped) >= min_chars:
            key = np.uint64(template_line_key(language, stripped))
            i = int(np.searchsorted(templates, key))
            if i < templates.size and templates[i] == key:
                removed += 1
                continue
        kept.append(line)
    return ("\n".join(kept), removed) if removed else (text, 0)


def shingle_hashes(text: str, window: int) -> np.ndarray:
    """xxh64 of each run of `window` words of the lowercased NFKC text (uint64, may be empty).

    A shingle is its words joined by single spaces; a document shorter than the window is one
    shingle of all its words. The words are joined and encoded once and each shingle is hashed
    as a slice of that buffer (no string per shingle)."""
    words = _WORDS.findall(unicodedata.normalize("NFKC", text).lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    data = " ".join(words).encode("utf-8", "surrogatepass")
    if len(words) <= window:
        return np.array([xxhash.xxh64_intdigest(data)], dtype=np.uint64)
    spaces = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x20)
    starts = np.r_[0, spaces + 1][: len(words) - window + 1].tolist()
    ends = np.r_[spaces, len(data)][window - 1 :].tolist()
    view, digest = memoryview(data), xxhash.xxh64_intdigest
    return np.fromiter(
        (digest(view[a:b]) for a, b in zip(starts, ends, strict=True)), np.uint64, len(starts)
    )


def simhash(hashes: np.ndarray) -> int:
    """Charikar's SimHash of feature hashes: bit j is 1 when most features have bit j set.

    Every shingle occurrence weighs 1; returns 0 for no features."""
    if hashes.size == 0:
        return 0
    bits = np.unpackbits(
        hashes.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little"
    )
    majority = bits.sum(axis=0, dtype=np.int64) * 2 > hashes.size  # (64,) bit j = value bit j
    return int(np.packbits(majority, bitorder="little").view("<u8")[0])


def text_simhash(text: str, window: int) -> int:
    return simhash(shingle_hashes(text, window))
