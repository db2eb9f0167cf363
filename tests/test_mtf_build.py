"""`bloomforge mtf build`: promptsource templates rendered as promptsource renders them, over the
shared XQuAD / Tatoeba / HellaSwag files, into xP3's `{inputs, targets}` jsonl.

The expected strings are written by hand from the upstream template text (promptsource commit
7dab96a, `templates.yaml` in shared/data/mtf/promptsource) and promptsource's `Template.apply`
(render, split on `|||`, strip each part), not captured from this code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bloomforge.cli import main
from bloomforge.errors import BloomforgeError
from bloomforge.mtf.build import Task, build
from bloomforge.mtf.templates import (
    BUILTIN,
    RenderSkip,
    find_template_files,
    load_template_file,
    templates_for,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PROMPTS = SHARED / "mtf" / "promptsource"
XQUAD = SHARED / "mtf" / "xquad"
TATOEBA = SHARED / "corpus" / "tatoeba"
HELLASWAG = SHARED / "eval" / "hellaswag"

pytestmark = pytest.mark.skipif(not PROMPTS.is_dir(), reason="shared/data/mtf not found")


def _by_name(dataset: str, roots=(PROMPTS,)) -> dict:
    return {t.name: t for t in templates_for(dataset, list(roots))}


SQUAD = {
    "id": "q1",
    "title": "Cats",
    "context": "The cat sat on the mat.",
    "question": "Where did the cat sit?",
    "answers": {"text": ["on the mat"], "answer_start": [12]},
}
XQUAD_EXPECTED = {
    "given_context_generate_question": (
        "The cat sat on the mat.\n\nGenerate a question from the above passage :",
        "Where did the cat sit?",
    ),
    "answer_given_context_and_question": (
        "The cat sat on the mat.\n\nQ: Where did the cat sit?\n\nReferring to the passage above, "
        "the correct answer to the given question is",
        "on the mat",
    ),
    "answer_the_question": (
        "The cat sat on the mat.\n\nWith reference to the above context, Where did the cat sit?",
        "on the mat",
    ),
    "jeopardy": (
        'The cat sat on the mat.\n\nFrom the above passage, a reasonable question with "on the '
        'mat" as the answer would be:',
        "Where did the cat sit?",
    ),
    "answer_question_given_context": (
        "Refer to the passage below and answer the following question:\n\nPassage: The cat sat "
        "on the mat.\n\nQuestion: Where did the cat sit?",
        "on the mat",
    ),
    "given_context_answer_question_variation": (
        "The cat sat on the mat.\n\nQ: Where did the cat sit?\n\nA:",
        "on the mat",
    ),
}


@pytest.mark.parametrize("name", sorted(XQUAD_EXPECTED))
def test_xquad_templates_render_as_promptsource(name):
    t = _by_name("xquad")[name]
    assert t.apply(SQUAD) == list(XQUAD_EXPECTED[name])
    assert t.input_target(SQUAD) == XQUAD_EXPECTED[name]


COPA_CAUSE = {
    "premise": "The man broke his toe.",
    "choice1": "He dropped a hammer on his foot.",
    "choice2": "He got a hole in his sock.",
    "question": "cause",
    "label": 0,
}
COPA_EFFECT = {
    "premise": "I tipped the bottle.",
    "choice1": "The liquid in the bottle froze.",
    "choice2": "The liquid in the bottle poured out.",
    "question": "effect",
    "label": 1,
}


def test_copa_templates_render_as_promptsource():
    copa = _by_name("super_glue")
    assert copa["exercise"].apply(COPA_CAUSE) == [
        "Exercise: choose the most plausible alternative.\n\nThe man broke his toe.  because... "
        "\n- He dropped a hammer on his foot.\n- He got a hole in his sock.",
        "He dropped a hammer on his foot.",
    ]
    nxt = copa["…What could happen next, C1 or C2?"]
    assert nxt.apply(COPA_EFFECT) == [
        'I tipped the bottle. What could happen next, "The liquid in the bottle froze." or '
        '"The liquid in the bottle poured out."?',
        "The liquid in the bottle poured out.",
    ]
    # promptsource renders "" for a `cause` question: the template does not apply, so skip it
    assert nxt.apply(COPA_CAUSE) == [""]
    with pytest.raises(RenderSkip, match="1 part"):
        nxt.input_target(COPA_CAUSE)
    # a test-split label (-1) leaves the target empty: skipped as xP3's builder does
    with pytest.raises(RenderSkip, match="empty target"):
        copa["exercise"].input_target({**COPA_CAUSE, "label": -1})


HELLA = {
    "activity_label": "Roof shingle removal",
    "ctx": "A man is sitting on a roof. he",
    "endings": [
        "is using wrap to wrap a pair of skis.",
        "is ripping level tiles off.",
        "is holding a rubik's cube.",
        "starts pulling up roofing on a roof.",
    ],
    "label": "3",
}


def test_hellaswag_templates_render_as_promptsource():
    hs = _by_name("hellaswag")
    assert hs["Open-ended completion"].apply(HELLA) == [
        "Complete the sentence: A man is sitting on a roof. he",
        "starts pulling up roofing on a roof.",
    ]
    assert hs["Topic without the ending answer"].apply(HELLA) == [
        "What is the topic of the sentence: A man is sitting on a roof. he",
        "Roof shingle removal",
    ]
    # `choice` draws one of the four openings, reproducibly for a given seed
    rnd = hs["Randomized prompts template"]
    first = rnd.apply(HELLA, seed=3)
    assert rnd.apply(HELLA, seed=3) == first
    assert first[0].split("\n")[0] in {
        "Can you pick the correct ending for the sentence: ",  # upstream keeps the spaces
        "The task is to generate the ending for the sentence: ",
        "How does this sentence end? ",
        "From the list of endings described below, what ending makes the most sense for the "
        "sentence ",
    }
    assert first[1] == "starts pulling up roofing on a roof."
    # the shared HellaSwag copy lacks ctx_a: a missing field is a counted skip, not a hole
    with pytest.raises(RenderSkip, match="ctx_a"):
        hs["complete_first_then"].apply(HELLA)


def test_separator_inside_a_record_is_not_a_split():
    t = _by_name("xquad")["given_context_answer_question_variation"]
    ex = {**SQUAD, "context": "a ||| b"}
    assert t.input_target(ex) == ("a ||| b\n\nQ: Where did the cat sit?\n\nA:", "on the mat")


def test_builtin_tatoeba_templates():
    tt = _by_name("tatoeba", roots=())
    pair = {"sentence": "Merci.", "english": "Thank you.", "lang": "fr", "lang_name": "French"}
    got = {name: t.input_target(pair) for name, t in tt.items()}
    assert got == {
        "translate_xx_to_en": (
            "Translate the following sentence from French to English:\nMerci.",
            "Thank you.",
        ),
        "translate_en_to_xx": ("Translate to French: Thank you.", "Merci."),
        "how_in_english": ("Merci.\n\nHow would you say this in English?", "Thank you."),
        "parallel_en_xx": ("English: Thank you.\nFrench:", "Merci."),
    }
    assert find_template_files([BUILTIN])


def test_every_shipped_template_loads():
    templates = [t for f in find_template_files([PROMPTS]) for t in load_template_file(f)]
    assert len(templates) == 68  # shared/data/README.md: 68 templates
    assert len({t.id for t in templates}) == 68
    assert all(t.metadata.get("languages") == ["en"] for t in templates)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_unsafe_yaml_tag_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = _write(
        tmp_path / "t" / "templates.yaml",
        f"dataset: xquad\ntemplates:\n  x: !!python/object/apply:os.system\n  - 'touch {marker}'\n",
    )
    with pytest.raises(BloomforgeError, match=r"templates\.yaml: not a promptsource") as e:
        load_template_file(bad)
    assert "\n" not in str(e.value)
    assert not marker.exists()


_ONE = """dataset: xquad
templates:
  bad-1: !Template
    answer_choices: null
    id: bad-1
    jinja: '{JINJA}'
    metadata: !TemplateMetadata
      original_task: true
    name: broken
    reference: ''
"""


@pytest.mark.parametrize(
    ("jinja", "message"),
    [
        ("{{{{ context ||| {{{{question}}}}", "template bad-1 ('broken'): bad Jinja"),
        ("{{{{context}}}} {{{{question}}}}", "template bad-1 ('broken'): no '|||'"),
    ],
)
def test_malformed_template_is_a_one_line_error(tmp_path, capsys, jinja, message):
    tpl = _write(tmp_path / "t" / "templates.yaml", _ONE.replace("{JINJA}", jinja.format()))
    out = tmp_path / "xp3"
    argv = ["mtf", "build", "--templates", str(tpl), "--task", f"xquad={XQUAD}"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(tpl) in err and "\n" not in err
    assert not out.exists()


def test_missing_field_and_malformed_record_are_counted(tmp_path):
    squad = {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "The cat sat on the mat.",
                        "qas": [
                            {
                                "id": "ok",
                                "question": "Where?",
                                "answers": [{"text": "on the mat", "answer_start": 12}],
                            },
                            {"id": "noq", "answers": [{"text": "mat", "answer_start": 19}]},
                            "not a question",
                        ],
                    }
                ],
            }
        ]
    }
    data = _write(tmp_path / "xq" / "xquad.de.json", json.dumps(squad))
    tpl = PROMPTS / "xquad"
    m = build([Task("xquad", str(data.parent))], [tpl], tmp_path / "out")
    for entry in m["counts"]["xquad"]["de"].values():
        assert entry["sampled"] == 2 and entry["written"] == 1
        assert entry["skipped"] == {
            "missing field ('question' is undefined)": {"count": 1, "records": ["noq"]}
        }
    bad = m["malformed_records"]["xquad"]["de"]
    assert bad == {
        "question is not a mapping": {"count": 1, "records": ["xquad.de.json:data[0][0][2]"]}
    }
    assert m["totals"] == {"written": 6, "skipped": 6, "malformed_records": 1}
    lines = (tmp_path / "out" / "de.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all(json.loads(x)["record_id"] == "ok" for x in lines)


KEYS = {"inputs", "targets", "dataset", "template_id", "template_name", "language", "record_id"}


def test_cli_end_to_end_on_shared_data(tmp_path, capsys):
    out = tmp_path / "xp3"
    argv = [
        "mtf", "build", "--templates", str(PROMPTS), "--task", f"xquad={XQUAD}",
        "--task", f"tatoeba={TATOEBA}", "--task", f"hellaswag={HELLASWAG}",
        "--max-per-dataset", "12", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    files = sorted(p.name for p in out.glob("*.jsonl"))
    assert files == sorted(f["file"] for f in m["files"].values())
    assert {"ar.jsonl", "de.jsonl", "zh.jsonl", "fr.jsonl", "cmn.jsonl", "en.jsonl"} <= set(files)
    seen: dict[tuple, int] = {}
    for name in files:
        for line in (out / name).read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            assert set(rec) == KEYS and rec["inputs"] and rec["targets"]
            assert f"{rec['language']}.jsonl" == name
            key = (rec["dataset"], rec["language"], rec["template_id"])
            seen[key] = seen.get(key, 0) + 1
    written = 0
    for ds, langs in m["counts"].items():
        for lang, per_t in langs.items():
            # each dataset x language stays under the cap, shared by its templates
            assert sum(e["written"] for e in per_t.values()) <= 12
            for tid, e in per_t.items():
                skipped = sum(s["count"] for s in e["skipped"].values())
                assert e["written"] + skipped == e["sampled"]
                assert seen.get((ds, lang, tid), 0) == e["written"]
                written += e["written"]
    assert written == m["totals"]["written"] == sum(f["records"] for f in m["files"].values())
    assert len(m["counts"]["xquad"]) == 12 and len(m["counts"]["tatoeba"]) == 112
    assert all(e["written"] == 2 for e in m["counts"]["xquad"]["th"].values())  # 12 // 6
    # deterministic: the same command gives the same bytes
    again = tmp_path / "again"
    assert main([*argv[:-1], str(again)]) == 0
    for name in [*files, "manifest.json"]:
        if name != "manifest.json":
            assert (out / name).read_bytes() == (again / name).read_bytes()
    # the output folder is not replaced without --overwrite
    capsys.readouterr()
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "--seed", "1"]) == 0


def test_unknown_task_and_bad_spec(tmp_path, capsys):
    base = ["mtf", "build", "--templates", str(PROMPTS), "--out", str(tmp_path / "o")]
    assert main([*base, "--task", f"copa={XQUAD}"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main([*base, "--task", "xquad"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
