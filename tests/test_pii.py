"""PII redaction as BigScience did (KEY, EMAIL, USER, IP -> PI:<TYPE>), on hand-written texts.

The expected outputs are worked out by hand from BigScience's rules (bigscience-workshop/
data-preparation, 02_pii) and the documented deviations in `bloomforge.data.pii`; a hypothesis
fuzz test checks that arbitrary Unicode never crashes it and that spans always point at the
original text.
"""

from __future__ import annotations

import json

import pytest
from datatrove.data import Document
from hypothesis import given, settings
from hypothesis import strategies as st

from bloomforge.data.ledger import ledger_key
from bloomforge.data.pii import PIIRedactor, find_pii, pii_stat_key, redact

CASES = [
    # EMAIL: the sentence's full stop is not part of the address
    ("Write to jane.roe@mail.example.com.", "Write to PI:EMAIL."),
    ("a@b.com c@d.org", "PI:EMAIL PI:EMAIL"),  # one space apart: both (look-around boundaries)
    # USER: an @handle of at least 3 characters after a boundary
    ("Meet @ab or @carol_x!", "Meet @ab or PI:USER!"),
    ("thanks(@dave99)", "thanks(PI:USER)"),
    # KEY: >= 4 letter/digit alternations, or >= 3 digit groups (BigScience: phone numbers too)
    ("token ghp_1a2b3c4d5e6f7g8h here", "token PI:KEY here"),
    ("call 555-123-4567 now", "call PI:KEY now"),
    # IP v4 and v6, validated; Han characters are boundaries (no spaces in Chinese)
    ("from 8.8.8.8 and 2001:4860:4860::8888 done", "from PI:IP and PI:IP done"),
    ("联系8.8.4.4谢谢", "联系PI:IP谢谢"),
    ("lan 192.168.1.10 and loopback ::1.", "lan PI:IP and loopback PI:IP."),
    # not PII
    ("version 1.2.3.4.5 or v10.0.0.1.2", "version 1.2.3.4.5 or v10.0.0.1.2"),
    ("octets 999.1.1.1 and 256.1.1.1", "octets 999.1.1.1 and 256.1.1.1"),
    ("on 2023-01-15 at 12:30:45, ref 12345", "on 2023-01-15 at 12:30:45, ref 12345"),
    ("see https://example.com/a?b=c", "see https://example.com/a?b=c"),
    (
        "http://creativecommons.org/licenses/by-nc-sa/2.0",
        "http://creativecommons.org/licenses/by-nc-sa/2.0",
    ),
    ("The quick brown fox.", "The quick brown fox."),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_redaction_of_hand_written_texts(text, expected):
    assert redact(text)[0] == expected


def test_spans_point_at_the_originals():
    text = "mail bob@example.org from 8.8.8.8"
    matches = find_pii(text)
    assert [(m.type, m.text) for m in matches] == [("EMAIL", "bob@example.org"), ("IP", "8.8.8.8")]
    assert all(text[m.start : m.end] == m.text for m in matches)


def test_private_ips_as_bigscience_or_public_only():
    text = "hosts 10.0.0.1, 127.0.0.1 and 1.1.1.1"
    assert redact(text)[0] == "hosts PI:IP, PI:IP and PI:IP"  # BigScience: every address
    assert redact(text, public_ips_only=True)[0] == "hosts 10.0.0.1, 127.0.0.1 and PI:IP"


def test_types_can_be_chosen():
    text = "bob@example.org @carol_x 8.8.8.8"
    assert redact(text, types=["IP"])[0] == "bob@example.org @carol_x PI:IP"


def test_step_writes_originals_only_to_restricted(tmp_path):
    step = PIIRedactor(str(tmp_path / "restricted"), "web")
    docs = [
        Document(
            text="write bob@example.org", id="d1", metadata={"source": "web", "language": "en"}
        ),
        Document(text="nothing here", id="d2", metadata={"source": "web", "language": "en"}),
        Document(text="ip 8.8.8.8 @carol_x", id="d3", metadata={"source": "web", "language": "fr"}),
    ]
    out = list(step.run(iter(docs), rank=3))
    assert [d.text for d in out] == ["write PI:EMAIL", "nothing here", "ip PI:IP PI:USER"]
    lines = (tmp_path / "restricted" / "web" / "00003.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [(e["id"], e["type"], e["original"], e["start"], e["end"]) for e in entries] == [
        ("d1", "EMAIL", "bob@example.org", 6, 21),
        ("d3", "IP", "8.8.8.8", 3, 10),
        ("d3", "USER", "@carol_x", 11, 19),
    ]
    stats = step.stats.stats
    assert stats[pii_stat_key("web", "en", "EMAIL")].total == 1
    assert stats[pii_stat_key("web", "fr", "USER")].total == 1
    assert stats[ledger_key("pii", "web", "en", "in", "docs")].total == 2
    assert stats[ledger_key("pii", "web", "en", "kept", "docs")].total == 2
    assert not list((tmp_path / "restricted").rglob("*.tmp"))


_PIIISH = st.text(alphabet=st.sampled_from(list("aZ09.:@_-/+= \n中éx")), max_size=80)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), _PIIISH))
def test_fuzz_arbitrary_unicode(text):
    redacted, matches = redact(text)
    last = 0
    rebuilt = []
    for m in matches:  # in order, not overlapping, pointing at the original
        assert last <= m.start < m.end <= len(text)
        assert text[m.start : m.end] == m.text
        rebuilt += [text[last : m.start], f"PI:{m.type}"]
        last = m.end
    rebuilt.append(text[last:])
    assert redacted == "".join(rebuilt)


# BigScience's KEY and EMAIL regexes backtrack (super-linear on long runs), so documents go through
# pii_patterns' linear matchers; these check that they find exactly the regexes' spans.
_ATOMS = [
    "a", "A", "Z", "0", "12", "345", "0000000", "AB", "a1", "A1", "1A", "ab",
    "-", "_", "/", ":", "=", "+", " ", ".", ",", "(", "'", '"', "@", "\n", "中", "é",
    "\u2013", "\u0660", "www.", "://", "x@y", "b@c.d",
]  # fmt: skip
_MOTIFS = st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.one_of(_PIIISH, st.tuples(_MOTIFS, st.integers(1, 6)).map(lambda m: m[0] * m[1])))
def test_linear_matchers_find_what_the_bigscience_regexes_find(text):
    from bloomforge.data.pii_patterns import BIGSCIENCE_PATTERNS, email_spans, key_spans

    for kind, spans in (("KEY", key_spans), ("EMAIL", email_spans)):
        assert list(spans(text)) == [m.span() for m in BIGSCIENCE_PATTERNS[kind].finditer(text)]


@pytest.mark.parametrize(
    "text",
    [
        "call 555-123-4567 or 555 123 4567, id AB12CD34EF, key a1b2c3d4:e5f6, 978-3-16-148410-0",
        "2019-2020 A0A0A0 0A0A0A0 x 12345678901234567890 ABC-DEF-123 1:2:3:4:5:6a",
        "mail a.b@c.d, x@y.z. (e@f.gh) 'q@r.st' a@b@c.d @@x.yz, see x@y",
        "ghp_1a2b3c4d5e6f7g8h 0x1f2e3d4c5b6a aZ09-_/+=:aZ09 aa11aa11aa11aa11_",
    ],
)
def test_linear_matchers_on_hand_written_texts(text):
    from bloomforge.data.pii_patterns import BIGSCIENCE_PATTERNS, email_spans, key_spans

    for kind, spans in (("KEY", key_spans), ("EMAIL", email_spans)):
        assert list(spans(text)) == [m.span() for m in BIGSCIENCE_PATTERNS[kind].finditer(text)]
