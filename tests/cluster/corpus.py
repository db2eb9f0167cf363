"""A small two-source input corpus for the executor tests, written here (no shared data).

French and English documents of random common words, with what the pipeline must act on:
exact copies across files (dedup), too-short and repetitive documents (ROOTS filters), an
e-mail address (PII), malformed records (set aside) and an English paragraph in the French
source (language id). Deterministic: the same files on every run.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import yaml

# Common words: random 70-word documents of them pass ROOTS' filters (stop words, repetition),
# are identified as their language, and are far from each other for every dedup method.
_FR = (
    "le la les un une des et ou mais donc car de du dans sur sous avec pour par sans chez "
    "il elle nous vous ils elles on qui que dont où ce cette ces son sa ses leur notre votre "
    "est sont était avait fait peut doit va vont a ont sera "
    "maison ville rivière jardin école marché livre musée train village enfant femme homme "
    "ami voisin médecin élève table porte fenêtre pain soleil pluie hiver printemps matin soir "
    "grand petit vieux nouveau beau long rouge vert calme heureux lent rapide "
    "toujours souvent parfois encore déjà jamais aujourd'hui hier demain ici ensemble "
    "marcher parler lire écrire manger dormir chanter travailler attendre ouvrir fermer "
    "regarder acheter vendre partir venir rester tomber courir jouer apprendre"
)
_EN = (
    "the a an and or but so of in on under with for by without at to from "
    "he she we you they it who which that this these those his her their our your "
    "is are was were had has will can must may "
    "house city river garden school market book museum train village child woman man "
    "friend neighbour doctor student table door window bread sun rain winter spring morning "
    "evening big small old new long red green quiet happy slow fast "
    "always often sometimes still already never today yesterday tomorrow here together "
    "walk talk read write eat sleep sing work wait open close look buy sell leave come stay "
    "fall run play learn"
)
FR, EN = _FR.split(), _EN.split()


def document(rng: random.Random, words: list[str], n: int = 70) -> str:
    """`n` words in sentences of 10, capitalised and ending with a full stop."""
    picked = [rng.choice(words) for _ in range(n)]
    sentences = [" ".join(picked[i : i + 10]) for i in range(0, n, 10)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences)


def write_corpus(root: Path) -> dict[str, list[str]]:
    """Writes root/fr/{a,b}.jsonl(.gz) and root/web.txt; returns the source -> paths map."""
    rng = random.Random(0)
    fr = [document(rng, FR) for _ in range(24)]
    en = [document(rng, EN) for _ in range(16)]
    a = [{"text": t, "id": f"a{i}", "url": f"http://fr.example/{i}"} for i, t in enumerate(fr[:12])]
    a.append({"text": "Trop court."})  # too short for ROOTS' filters
    a.append({"text": en[0], "id": "english"})  # not French: language id
    a.append({"text": fr[1] + " Écrire à marie.dupont@example.org pour tout renseignement."})
    b = [{"text": t} for t in fr[12:]]
    b += [{"text": fr[3]}, {"text": fr[5]}]  # exact copies of a.jsonl documents
    b.append({"text": "bonjour " * 60})  # repetitive
    (root / "fr").mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(d, ensure_ascii=False) for d in a] + ["{not json"]
    (root / "fr" / "a.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(root / "fr" / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(d, ensure_ascii=False) for d in b) + "\n")
    web = [*en[1:], fr[20], en[2], ""]  # French in the web source, one copy, one empty line
    (root / "web.txt").write_text("\n".join(web) + "\n", encoding="utf-8")
    return {"fr": [str(root / "fr" / "*.jsonl*")], "web": [str(root / "web.txt")]}


def write_config(root: Path, paths: dict[str, list[str]], **sections: Any) -> Path:
    """data.yaml for the corpus: fr (language fr; filters, and dedup with MinHash over 4 buckets)
    and web (language auto; filters, no dedup), and `sections` (slurm, ray). Few stages and
    tasks: each is a Slurm job or a Ray actor."""
    config = {
        "sources": [
            {"name": "fr", "paths": paths["fr"], "language": "fr"},
            {
                "name": "web",
                "paths": paths["web"],
                "format": "txt",
                "language": "auto",
                "dedup": False,
            },
        ],
        "dedup": {"minhash": True, "minhash_buckets": 4},
        **sections,
    }
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
