"""BigScience's PII patterns (KEY, EMAIL, USER, IP), and matchers for them in linear time.

In: a text. Out: `spans(kind, text)`, the (start, end) of every match of BigScience's pattern
for `kind`, in the order and with the extent that `BIGSCIENCE_PATTERNS[kind].finditer(text)`
gives them. `bloomforge.data.pii` validates and redacts them.

The patterns are BigScience's "MST" regexes (bigscience-workshop/data-preparation,
preprocessing/training/02_pii/bigscience_pii_detect_redact.py, the `high_risk_tags` KEY, EMAIL,
USER, IP_ADDRESS that were applied), rebuilt here from their parts, with look-around boundaries
(see `bloomforge.data.pii`). The KEY and EMAIL regexes backtrack: on a run of digits their time
grows with the square of its length (6,400 digits: 3.7 s; 30,000: 80 s) or worse, so
`BIGSCIENCE_PATTERNS` is their specification, and documents go through
- `key_spans`: the KEY regex run as a backtracking search that records which (state, position)
  pairs failed, so none is explored twice (memoized backtracking: Davis et al., "Using Selective
  Memoization to Defeat Regular Expression Denial of Service (ReDoS)", IEEE S&P 2021);
- `email_spans`: the EMAIL regex's choices made once per run of characters, not once per start.
USER and IP are their regexes: each start reads a bounded stretch, so they are linear already.
tests/test_pii.py compares `key_spans` and `email_spans` with those regexes on generated texts.
"""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterator

import regex

# Characters BigScience allowed around a span (besides start/end of line): whitespace, the
# punctuation below, and Han characters (Chinese text has no spaces).
_AROUND = r"""\s@?,!;:'")(.\p{Han}"""


def _between(body: str, before: str = _AROUND, after: str | None = _AROUND) -> str:
    tail = "" if after is None else rf"(?=$|[{after}])"
    return rf"(?<=^|[{before}])(?:{body}){tail}"


# KEY: >= 4 letter/digit alternations (api keys, hashes) or >= 3 groups of digits/capitals
# (BigScience regex101.com/r/JQkmh8/5). The classes are named for `_KeyScanner`.
_LETTER, _UPPER, _DIGIT = "[A-Za-z]", "[A-Z]", r"\p{Nd}"
_MARK = r"[\p{Nd}\p{Pd}/+=:_]"  # what alternates with letters
_MARK_NO_UNDERSCORE = r"[\p{Nd}\p{Pd}/+=:]"
_GROUP_SEP = r"[ \p{Pd}]"
_KEY_MIXED = rf"(?:{_LETTER}+{_MARK}+|{_MARK_NO_UNDERSCORE}+{_LETTER}+){{4,}}"
_KEY_GROUPS = (
    rf"(?:(?:{_DIGIT}{{3,}}|{_UPPER}+{_DIGIT}+{_UPPER}*|{_DIGIT}+{_UPPER}+{_DIGIT}*)"
    rf"{_GROUP_SEP}?){{3,}}"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = "|".join(  # every compressed form (BigScience's ipv6_pattern)
    (
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?:(?::{_H}){{1,7}}|:)",
        r"fe80:(?::[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]+",
        rf"::(?:ffff(?::0{{1,4}})?:)?{_IPV4}",
        rf"(?:{_H}:){{1,4}}:{_IPV4}",
    )
)
# EMAIL: regex101.com/r/OZdSUu/5; USER: an @handle of >= 3 characters (regex101.com/r/mOqi1s/3).
_LOCAL_STOP = r"\s@,?!;:)("  # not in an address's local part
_DOMAIN_STOP = r",\s!?;"  # not in its domain
_LAST_STOP = r"""\s'"@,?!;:)(."""  # not its last character
_EMAIL_BEFORE = r"""\s'"@,?!;:)(.\p{Han}"""
_EMAIL_AFTER = r"\s@,?!;:)(.\p{Han}"
_EMAIL = rf"[^{_LOCAL_STOP}]+@[^{_DOMAIN_STOP}]+[^{_LAST_STOP}]"
_USER = r"""@[^\s@,?!;:'")(]{3,}"""

# BigScience's patterns as regexes: KEY and EMAIL as the specification of `key_spans` and
# `email_spans`, USER and IP as used.
BIGSCIENCE_PATTERNS: dict[str, regex.Pattern] = {
    "KEY": regex.compile(_between(rf"{_KEY_MIXED}|{_KEY_GROUPS}"), regex.MULTILINE),
    "EMAIL": regex.compile(
        _between(_EMAIL, before=_EMAIL_BEFORE, after=_EMAIL_AFTER), regex.MULTILINE
    ),
    "USER": regex.compile(
        _between(_USER, before=r"""\s@,?!;:'")(\p{Han}""", after=None), regex.MULTILINE
    ),
    # POSIX: leftmost-longest, so a full IPv6 address wins over a shorter alternative's prefix
    "IP": regex.compile(_between(rf"{_IPV4}|{_IPV6}"), regex.MULTILINE | regex.POSIX),
}

# --- KEY --------------------------------------------------------------------------------------
# Where a match may start: after a boundary (consumed by `_KEY_START`, faster than a
# look-behind), and (MIXED) letters then a mark, five runs of letters or marks (4 units hold 4
# letter/mark changes), or (GROUPS) capitals then a digit, a first group of 2 or more, six
# capitals or digits (3 groups). Runs are counted 8 characters at most at a time, so each place
# is looked at in bounded time.
_KEY_PLACE = (
    rf"(?!_)(?:(?=[A-Za-z]*+{_MARK})(?=(?:[A-Za-z]{{1,8}}+|{_MARK}{{1,8}}+){{5}})"
    rf"|(?=[A-Z]*+\p{{Nd}})(?=[A-Z\p{{Nd}}]{{2}})(?=(?:[A-Z\p{{Nd}}]{_GROUP_SEP}?){{6}}))"
)
_KEY_START = regex.compile(rf"[{_AROUND}]{_KEY_PLACE}")
_KEY_FIRST = regex.compile(_KEY_PLACE)  # at the start of the text
# A match ends before a boundary character or at the end: without one in reach, an alternative
# cannot match (a long digit run followed by a letter fails at once).
_MIXED_MAY_END = regex.compile(rf"[A-Za-z\p{{Nd}}\p{{Pd}}/+=:_]+?(?=[{_AROUND}]|$)")
_GROUPS_MAY_END = regex.compile(rf"[A-Z\p{{Nd}}\p{{Pd}} ]+?(?=[{_AROUND}]|$)")

# `_KeyScanner` runs `_KEY_MIXED|_KEY_GROUPS` as a state machine, searched in the order a
# backtracking engine (Perl, `regex`) tries it: alternatives left to right, greedy loops longest
# first. A state is a node of the pattern and a count: units done (MIXED, 0..4) or groups done
# (GROUPS, 0..3), capped at the minimum the pattern needs. What follows a state does not depend
# on how it was reached, so a state that failed at a position fails there again: one bit per
# (state, position) records it, and each is explored at most once per text.

# character classes, as the bits of one byte per character (END: past the end of the text)
_C_LETTER, _C_UPPER, _C_DIGIT, _C_MARK, _C_MARK_NU, _C_SEP, _C_AROUND, _C_END = (
    1 << i for i in range(8)
)
_CLASSES = tuple(
    (bit, regex.compile(cls))
    for bit, cls in (
        (_C_LETTER, _LETTER),
        (_C_UPPER, _UPPER),
        (_C_DIGIT, _DIGIT),
        (_C_MARK, _MARK),
        (_C_MARK_NU, _MARK_NO_UNDERSCORE),
        (_C_SEP, _GROUP_SEP),
        (_C_AROUND, f"[{_AROUND}]"),
    )
)


class _ClassMap(dict):
    """A `str.translate` table: character code -> the character whose code is its class bits."""

    def __missing__(self, code: int) -> str:
        ch = chr(code)
        bits = chr(sum(bit for bit, cls in _CLASSES if cls.match(ch)))
        if len(self) > 100_000:  # any text can be thrown at this: stay bounded
            self.clear()
        self[code] = bits
        return bits


_CLASS_MAP = _ClassMap()

# MIXED: unit = letters+ marks+ (A) | marks-without-_+ letters+ (B), {4,}
_UNIT, _A_LETTERS, _A_MARKS, _B_MARKS, _B_LETTERS = range(5)
# GROUPS: (group = digits{3,} (G1) | upper+ digits+ upper* (G2) | digits+ upper+ digits* (G3),
# then an optional separator){3,}
_GROUP, _G1, _G2_UPPER, _G2_DIGITS, _G2_TAIL, _G3_DIGITS, _G3_UPPER, _G3_TAIL, _SEP = range(9)
_UNITS, _GROUPS = 4, 3


def _mixed(node: int, count: int) -> int:
    return node * (_UNITS + 1) + count


def _groups(node: int, count: int) -> int:
    return 5 * (_UNITS + 1) + node * (_GROUPS + 1) + count


_STATES = _groups(_SEP + 1, 0)  # 61: the failure bits of a position fit one 64-bit word
_ACCEPT = -1


def _fails(state: int) -> int:
    """The failure bits that `state` failing sets: its own and those of the same node with a
    lower count (a lower count accepts less: what fails with more units done fails with fewer)."""
    if state < _groups(0, 0):
        node, count = divmod(state, _UNITS + 1)
        return ((1 << (count + 1)) - 1) << _mixed(node, 0)
    node, count = divmod(state - _groups(0, 0), _GROUPS + 1)
    return ((1 << (count + 1)) - 1) << _groups(node, 0)


_FAILS = tuple(_fails(s) for s in range(_STATES))


def _options(state: int, c: int) -> tuple[tuple[int, int], ...]:
    """What to try after `state` at a character of classes `c`, in backtracking order: (next
    state, characters consumed); `_ACCEPT` when the match may end here (count reached and
    `(?=$|[AROUND])` holds). G1 consumes its three digits at once (the scanner checks them)."""
    out: list[tuple[int, int]] = []
    ends = bool(c & (_C_AROUND | _C_END))
    if state < _groups(0, 0):
        node, count = divmod(state, _UNITS + 1)
        done = (_mixed(_UNIT, min(count + 1, _UNITS)), 0)
        if node == _UNIT:
            if c & _C_LETTER:
                out.append((_mixed(_A_LETTERS, count), 1))
            if c & _C_MARK_NU:
                out.append((_mixed(_B_MARKS, count), 1))
            if count == _UNITS and ends:
                out.append((_ACCEPT, 0))
        elif node in (_A_LETTERS, _B_MARKS):  # the loop, then the first of the next part
            loop, then = (_C_LETTER, _C_MARK) if node == _A_LETTERS else (_C_MARK_NU, _C_LETTER)
            if c & loop:
                out.append((state, 1))
            elif c & then:
                out.append((_mixed(node + 1, count), 1))
        else:  # _A_MARKS, _B_LETTERS: the loop, then the unit is done
            if c & (_C_MARK if node == _A_MARKS else _C_LETTER):
                out.append((state, 1))
            out.append(done)
        return tuple(out)
    node, count = divmod(state - _groups(0, 0), _GROUPS + 1)
    done = (_groups(_SEP, min(count + 1, _GROUPS)), 0)
    digit, upper = c & _C_DIGIT, c & _C_UPPER
    if node == _GROUP:
        if digit:
            out.append((_groups(_G1, count), 3))
        if upper:
            out.append((_groups(_G2_UPPER, count), 1))
        if digit:
            out.append((_groups(_G3_DIGITS, count), 1))
        if count == _GROUPS and ends:
            out.append((_ACCEPT, 0))
    elif node in (_G2_UPPER, _G3_DIGITS):  # the loop, then the first of the next part
        loop, then = (upper, digit) if node == _G2_UPPER else (digit, upper)
        if loop:
            out.append((state, 1))
        elif then:
            out.append((_groups(node + 1, count), 1))
    elif node in (_G2_DIGITS, _G3_UPPER):  # the loop, then the optional tail
        if digit if node == _G2_DIGITS else upper:
            out.append((state, 1))
        out.append((_groups(node + 1, count), 0))
    elif node in (_G1, _G2_TAIL, _G3_TAIL):  # the loop, then the group is done
        if upper if node == _G2_TAIL else digit:
            out.append((state, 1))
        out.append(done)
    else:  # _SEP
        if c & _C_SEP:
            out.append((_groups(_GROUP, count), 1))
        out.append((_groups(_GROUP, count), 0))
    return tuple(out)


@functools.cache
def _table() -> tuple[tuple[tuple[tuple[int, int], ...], ...], ...]:
    return tuple(tuple(_options(s, c) for c in range(256)) for s in range(_STATES))


def key_spans(text: str) -> Iterator[tuple[int, int]]:
    """The KEY spans, as `BIGSCIENCE_PATTERNS["KEY"].finditer` finds them."""
    return _KeyScanner(text).spans()


class _KeyScanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.classes = b""  # per character its class bits; made when first needed
        self.failed = array("Q")  # per position, a bit per state that failed there

    def spans(self) -> Iterator[tuple[int, int]]:
        text, pos = self.text, 0
        while True:
            if pos == 0 and _KEY_FIRST.match(text):
                start = 0
            elif (m := _KEY_START.search(text, max(pos - 1, 0))) is not None:
                start = m.end()  # after the boundary character, at pos or later
            else:
                return
            end = -1
            if _MIXED_MAY_END.match(text, start):
                end = self._search(_mixed(_UNIT, 0), start)
            if end < 0 and _GROUPS_MAY_END.match(text, start):
                end = self._search(_groups(_GROUP, 0), start)
            if end < 0:
                pos = start + 1
                continue
            yield start, end
            pos = end

    def _search(self, state: int, p: int) -> int:
        """End of the first match from `state` at `p` in backtracking order, or -1."""
        if not self.classes:
            end = bytes([_C_END]) * 4
            self.classes = self.text.translate(_CLASS_MAP).encode("latin-1") + end
            self.failed = array("Q", bytes(8 * (len(self.text) + 1)))
        classes, failed, table, fails = self.classes, self.failed, _table(), _FAILS
        if failed[p] >> state & 1:
            return -1
        states, positions, tried = [state], [p], [0]  # the path (flat: no objects for the GC)
        while states:
            state, p = states[-1], positions[-1]
            options = table[state][classes[p]]
            i = tried[-1]
            if i == len(options):
                failed[p] |= fails[state]
                states.pop()
                positions.pop()
                tried.pop()
                continue
            tried[-1] = i + 1
            state, step = options[i]
            if state == _ACCEPT:
                return p
            if step == 3 and not classes[p + 1] & classes[p + 2] & _C_DIGIT:
                continue  # G1's \p{Nd}{3,} needs three digits
            p += step
            if not failed[p] >> state & 1:
                states.append(state)
                positions.append(p)
                tried.append(0)
        return -1


# --- EMAIL ------------------------------------------------------------------------------------
# `_EMAIL` between its boundaries, without backtracking. Its local part `[^LOCAL_STOP]+` runs to
# the next stop character, which must be the "@": every start inside one run of local-part
# characters ends at the same "@" and succeeds or fails with it, so only the run's first
# allowed start is tried. The domain `[^DOMAIN_STOP]+` and one last character: the regex gives
# back characters from the end of the domain's run until the last character and what follows
# it fit, so the match ends at the last such place in the run, the same for every "@" in it.
_LOCAL_STOP_BACK = regex.compile(rf"[{_LOCAL_STOP}]", regex.REVERSE)
_EMAIL_START = regex.compile(rf"[{_EMAIL_BEFORE}]")
_DOMAIN_END = regex.compile(rf"[{_DOMAIN_STOP}]")
_EMAIL_LAST_BACK = regex.compile(rf"[^{_LAST_STOP}](?=$|[{_EMAIL_AFTER}])", regex.REVERSE)


def email_spans(text: str) -> Iterator[tuple[int, int]]:
    """The EMAIL spans, as `BIGSCIENCE_PATTERNS["EMAIL"].finditer` finds them."""
    pos = 0  # where the regex's search resumes (after the last match)
    after_at = 0  # just after the last "@" looked at: no local part starts before it
    run_from, run_end, last = -1, -1, -1  # the last domain run seen, and its last good end
    at = text.find("@")
    while at >= 0:
        lo = max(pos, after_at)
        stop = _LOCAL_STOP_BACK.search(text, lo, at)
        if stop is not None:
            start = stop.end()
        elif lo == 0 or lo == after_at:  # ^, or just after an "@"
            start = lo
        else:  # resumed inside a run: its first place after a boundary character
            first = _EMAIL_START.search(text, pos - 1, at - 1)
            start = at if first is None else first.end()
        after_at = at + 1
        end = -1
        if start < at:
            domain = at + 1
            if not run_from <= domain < run_end:
                found = _DOMAIN_END.search(text, domain)
                run_from, run_end = domain, len(text) if found is None else found.start()
                tail = _EMAIL_LAST_BACK.search(text, domain + 1, run_end)
                last = -1 if tail is None else tail.start()
            if last > domain:
                end = last + 1
        if end > 0:
            yield start, end
            pos = end
            at = text.find("@", end)
        else:
            at = text.find("@", at + 1)


def spans(kind: str, text: str) -> Iterator[tuple[int, int]]:
    """The (start, end) of every match of BigScience's `kind` pattern in `text`, in order."""
    if kind == "KEY":
        return key_spans(text)
    if kind == "EMAIL":
        return email_spans(text)
    return (m.span() for m in BIGSCIENCE_PATTERNS[kind].finditer(text))
