"""A small prepared folder with planted PII, removals, a duplicate and searchable phrases.

`prepare_planted(root)` writes three sources (fr.txt, en.txt, web.jsonl with URLs) of generated
prose that passes the ROOTS filters, plus planted lines, and runs `bloomforge data prepare` on
them through the CLI. What was planted, and where (file, 1-based line), is in `PLANTED`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from bloomforge.cli import main

# Sentences from a small grammar with a free choice at almost every word, so that documents
# share few word 5-grams (MinHash and SimHash see them as distinct) yet read as the language
# (stop words, language id).
_EN = {
    "det": ["the", "a", "this", "that", "every", "one", "our", "their"],
    "adj": [
        "old",
        "quiet",
        "busy",
        "small",
        "famous",
        "northern",
        "wooden",
        "green",
        "early",
        "rural",
        "bright",
        "narrow",
    ],
    "noun": [
        "bridge",
        "market",
        "library",
        "harbour",
        "school",
        "garden",
        "museum",
        "station",
        "theatre",
        "church",
        "mill",
        "river",
        "farm",
        "road",
        "tower",
        "village",
    ],
    "verb": [
        "stood",
        "opened",
        "closed",
        "grew",
        "waited",
        "burned",
        "changed",
        "failed",
        "mattered",
        "returned",
    ],
    "prep": ["near", "behind", "under", "beside", "after", "before", "across", "within"],
    "conj": ["and", "but", "so", "because", "while", "although"],
    "pron": ["we", "they", "you", "people", "everyone", "nobody"],
    "verb2": ["remember", "believe", "know", "think", "say", "hope"],
    "adv": ["today", "again", "slowly", "there", "often", "quietly", "still", "soon"],
}
_FR = {
    "det": ["le", "un", "ce", "notre", "leur", "chaque"],
    "adj": [
        "vieux",
        "calme",
        "petit",
        "célèbre",
        "nouveau",
        "grand",
        "beau",
        "long",
        "ancien",
        "simple",
        "étroit",
        "clair",
    ],
    "noun": [
        "pont",
        "marché",
        "musée",
        "jardin",
        "théâtre",
        "village",
        "château",
        "moulin",
        "port",
        "quartier",
        "chemin",
        "fleuve",
    ],
    "verb": [
        "restait",
        "ouvrait",
        "fermait",
        "grandissait",
        "attendait",
        "changeait",
        "comptait",
        "revenait",
    ],
    "prep": [
        "près du",
        "derrière le",
        "sous le",
        "devant le",
        "après le",
        "avant le",
        "dans le",
        "sur le",
    ],
    "conj": ["et", "mais", "donc", "parce que", "pendant que", "alors que"],
    "pron": ["nous", "ils", "vous", "les gens", "tout le monde", "personne"],
    "verb2": ["croyons", "savons", "pensons", "disons", "espérons", "voyons"],
    "adv": ["encore", "souvent", "lentement", "toujours", "bientôt", "ici"],
}
_EN_T = "{det} {adj} {noun} {verb} {prep} the {noun} {conj} {pron} {verb2} it {adv}."
_FR_T = "{det} {noun} {adj} {verb} {prep} {noun} {conj} {pron} le {verb2} {adv}."

EMAIL_FR, EMAIL_FR_2, EMAIL_EN, IP_EN, IP_EN_2 = (
    "jean.dupont@example.org",
    "paul.martin@example.fr",
    "alice.smith@example.com",
    "203.0.113.77",
    "198.51.100.23",
)
SHORT_FR = f"Bonjour écrivez à {EMAIL_FR_2}"  # 4 words: under fr's 13 (number_words)
SHORT_EN = ["Short note about the weather today", "Another short line here"]  # under en's 20
REPEAT_EN = f"the cat sat on the mat near {IP_EN_2} " + "the cat sat on the mat " * 12
PLANTED = {
    # phrase: (source, file name, 1-based line)
    "quokka lantern": ("en", "en.txt", 6),
    "zéphyr magnifique": ("fr", "fr.txt", 4),
    "platypus orchestra": ("web", "web.jsonl", 2),
}
ORIGINALS = (EMAIL_FR, EMAIL_FR_2, EMAIL_EN, IP_EN, IP_EN_2)
PII_COUNTS = {"fr": {"EMAIL": 2}, "en": {"EMAIL": 1, "IP": 2}}  # hand counts of the plants


def _doc(r: random.Random, template: str, words: dict[str, list[str]], n: int = 6) -> str:
    sentences = (re.sub(r"\{(\w+)\}", lambda m: r.choice(words[m[1]]), template) for _ in range(n))
    return " ".join(x[0].upper() + x[1:] for x in sentences)


def corpus(root: Path) -> dict[str, Path]:
    """Write the inputs under root; returns {source: path}."""
    root.mkdir(parents=True, exist_ok=True)
    r = random.Random(0)
    fr = [_doc(r, _FR_T, _FR) for _ in range(30)]
    en = [_doc(r, _EN_T, _EN) for _ in range(30)]
    web = [_doc(r, _EN_T, _EN) for _ in range(4)]
    fr[3] += f" Écrivez à {EMAIL_FR} pour le zéphyr magnifique."
    en[5] += f" The server at {IP_EN} answered the quokka lantern query, said {EMAIL_EN}."
    web[1] += " A platypus orchestra played there once."
    fr += [fr[0], SHORT_FR]  # line 31: an exact duplicate of line 1; line 32: too short
    en += [*SHORT_EN, REPEAT_EN]  # lines 31, 32 too short; 33 repeats itself
    (root / "fr.txt").write_text("\n".join(fr) + "\n", encoding="utf-8")
    (root / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    with open(root / "web.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(web):
            f.write(json.dumps({"text": text, "url": f"https://example.net/page/{i}"}) + "\n")
    return {"fr": root / "fr.txt", "en": root / "en.txt", "web": root / "web.jsonl"}


def prepare_planted(root: Path) -> tuple[Path, dict[str, Path]]:
    """`bloomforge data prepare` over the planted corpus; returns (prepared folder, inputs)."""
    inputs = corpus(root / "in")
    out = root / "prepared"
    specs = [f"{name}={path}" for name, path in inputs.items()]
    assert main(["data", "prepare", "--input", *specs, "--out", str(out)]) == 0
    return out, inputs
