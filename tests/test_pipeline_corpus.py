"""The demo's corpus gatherer on a locale tree built here, with .mo files written per the GNU
gettext spec and read back by Python's own `gettext` (the reference reader)."""

from __future__ import annotations

import gettext
import json
import struct
from pathlib import Path

import pytest

from bloomforge.data.config import CorpusConfig
from bloomforge.data.corpus import gather_corpus, normalise_language
from bloomforge.documents.inputs import ReadStats, parse_inputs, read_documents

HEADER = (
    "Project-Id-Version: app 1.0\n"
    "Last-Translator: Marie Curie <marie.curie@example.org>\n"
    "Language-Team: French <traduc@example.org>\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Plural-Forms: nplurals=2; plural=(n > 1);\n"
)


def write_mo(path: Path, messages: dict[str, str]) -> None:
    """A GNU .mo file (gettext manual, "The Format of GNU MO Files"): little-endian magic
    0x950412de, revision 0, N strings, offsets of the original and translation tables (each N
    pairs of length and offset), no hash table; strings NUL-terminated, sorted by msgid. A
    plural entry is "singular\\0plural" -> "form0\\0form1"."""
    items = sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in messages.items())
    n = len(items)
    orig_table, trans_table = 28, 28 + 8 * n
    data_start = 28 + 16 * n
    blob, origs, trans = b"", [], []
    for key, _ in items:
        origs.append((len(key), data_start + len(blob)))
        blob += key + b"\0"
    for _, value in items:
        trans.append((len(value), data_start + len(blob)))
        blob += value + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, orig_table, trans_table, 0, 0)
    tables = b"".join(struct.pack("<2I", *p) for p in origs + trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + tables + blob)


def test_mo_writer_reads_back_with_gettext(tmp_path):
    mo = tmp_path / "x.mo"
    write_mo(
        mo,
        {
            "": HEADER,
            "Open file": "Ouvrir le fichier",
            "%d file\0%d files": "%d fichier\0%d fichiers",
        },
    )
    with open(mo, "rb") as f:
        t = gettext.GNUTranslations(f)
    assert t.gettext("Open file") == "Ouvrir le fichier"
    assert t.ngettext("%d file", "%d files", 1) == "%d fichier"
    assert t.ngettext("%d file", "%d files", 5) == "%d fichiers"
    assert "marie.curie@example.org" in t.info()["last-translator"]


@pytest.mark.parametrize(
    ("locale", "expected"),
    [("pt_BR", "pt"), ("sr@latin", "sr"), ("de_DE.UTF-8", "de"), ("zh_TW", "zh"), ("fr", "fr")],
)
def test_language_from_locale_folder(locale, expected):
    assert normalise_language(locale) == expected


def test_three_letter_code_to_iso_639_1_when_iso_codes_installed():
    if not Path("/usr/share/iso-codes/json/iso_639-3.json").exists():
        pytest.skip("iso-codes tables not installed")
    assert normalise_language("fra") == "fr"  # ISO 639-3 fra = ISO 639-1 fr
    assert normalise_language("ast") == "ast"  # Asturian has no two-letter code


def _messages(prefix: str, n: int) -> dict[str, str]:
    return {f"Message number {i}": f"{prefix} message {i} " + "x" * 40 for i in range(n)}


def _tree(root: Path) -> Path:
    loc = root / "locale"
    write_mo(loc / "fr/LC_MESSAGES/app.mo", {"": HEADER, **_messages("fr", 60)})
    write_mo(loc / "fr/LC_MESSAGES/tool.mo", {"": HEADER, **_messages("fr-tool", 20)})
    write_mo(loc / "pt_BR/LC_MESSAGES/app.mo", {"": HEADER, **_messages("pt", 50)})
    write_mo(loc / "sr@latin/LC_MESSAGES/app.mo", {"": HEADER, **_messages("sr", 40)})
    write_mo(loc / "en_GB/LC_MESSAGES/app.mo", {"": HEADER, **_messages("en-gb", 40)})
    write_mo(loc / "eo/LC_MESSAGES/app.mo", {"": HEADER, **_messages("eo", 2)})  # too small
    (loc / "fr/LC_MESSAGES/broken.mo").write_bytes(b"\x00" * 40)  # not a catalogue
    code = root / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "a.py").write_text("def f():\n    return 1\n")
    (code / "pkg" / "b.py").write_text("import os\nprint(os.sep)\n")
    (code / "site-packages").mkdir()
    (code / "site-packages" / "c.py").write_text("x = 1\n")  # installed packages: not stdlib
    return root


def test_gather_locale_tree(tmp_path):
    root = _tree(tmp_path)
    cfg = CorpusConfig(
        locale_dir=str(root / "locale"),
        languages=3,
        min_language_bytes=1500,
        max_bytes_per_language=2500,
        english_bytes=1000,
        document_bytes=500,
        code_dir=str(root / "code"),
        code_bytes=10_000,
    )
    out = tmp_path / "corpus"
    out.mkdir()
    m = gather_corpus(cfg, out)
    # Languages from the folder names; en_GB left out (English comes from the msgids); eo too
    # small; fr/broken.mo unreadable and counted.
    assert sorted(m["languages"]) == ["code", "en", "fr", "pt", "sr"]
    assert m["skipped"] == {"unreadable catalogue (Bad magic number)": 1}
    assert set(m["sources"]) == {"app", "tool", "python-stdlib"}
    for lang in ("fr", "pt", "sr"):
        assert m["languages"][lang]["bytes"] <= cfg.max_bytes_per_language
    assert m["languages"]["en"]["bytes"] <= cfg.english_bytes
    stats = ReadStats()
    docs = list(read_documents(parse_inputs([str(out / "app.jsonl")]), stats))
    assert stats.skipped == {}
    assert {d.language for d in docs} == {"fr", "pt", "sr", "en"}
    first_fr = next(d for d in docs if d.language == "fr")
    assert "marie.curie@example.org" in first_fr.text  # the header stays for PII redaction
    assert "fr message 0" in first_fr.text
    en = [d.text for d in docs if d.language == "en"]
    assert en and "Message number" in en[0] and "fr message" not in en[0]
    code = [json.loads(line) for line in (out / "python-stdlib.jsonl").read_text().splitlines()]
    assert sorted(r["metadata"]["file"] for r in code) == ["a.py", "pkg/b.py"]
    assert all(r["language"] == "code" for r in code)
    assert json.loads((out / "manifest.json").read_text())["languages"] == m["languages"]


def test_no_catalogues_continues_with_code(tmp_path):
    root = _tree(tmp_path)
    cfg = CorpusConfig(locale_dir=str(tmp_path / "missing"), code_dir=str(root / "code"))
    out = tmp_path / "corpus"
    out.mkdir()
    m = gather_corpus(cfg, out)
    assert list(m["languages"]) == ["code"]
    assert any("no message catalogues" in n for n in m["notes"])
