"""The five builtin zero-shot tasks, each a `TaskSpec` matching lm-eval 0.4's definition.

In: nothing (importing registers them). Out: `xcopa` (11 languages), `copa`, `hellaswag`,
`lambada`, `winogrande`, reading the files of `shared/data/eval/` (see shared/data/README.md).
Splits as lm-eval evaluates them: XCOPA test, COPA / HellaSwag / WinoGrande validation, LAMBADA
test.
"""

from __future__ import annotations

from typing import Any

from bloomforge.evaluation.tasks import TaskSpec, register, text_field

# lm_eval/tasks/xcopa/utils.py: the connective words per language, for question cause / effect.
XCOPA_CONNECTIVES: dict[str, dict[str, str]] = {
    "et": {"cause": "sest", "effect": "seetõttu"},
    "ht": {"cause": "poukisa", "effect": "donk sa"},
    "id": {"cause": "karena", "effect": "maka"},
    "it": {"cause": "perché", "effect": "quindi"},
    "qu": {"cause": "imataq", "effect": "chaymi"},
    "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
    "ta": {"cause": "காரணமாக", "effect": "எனவே"},
    "th": {"cause": "เพราะ", "effect": "ดังนั้น"},
    "tr": {"cause": "çünkü", "effect": "bu yüzden"},
    "vi": {"cause": "bởi vì", "effect": "vì vậy"},
    "zh": {"cause": "因为", "effect": "所以"},
}
COPA_CONNECTIVES = {"cause": "because", "effect": "therefore"}


def _lower_first(text: str) -> str:
    # lm-eval's convert_choice: the choice continues the premise's sentence.
    return text[:1].lower() + text[1:]


# Each `prepare` reads its fields through text_field: a record without one (or with a number
# where text belongs) is a one-line error naming the file, line and field, as for custom tasks.
def _copa_fields(record: dict[str, Any], connectives: dict[str, str]) -> dict[str, Any]:
    # lm-eval's doc_to_text drops the premise's last character (its period) unconditionally.
    return {
        "premise_cut": text_field(record, "premise").strip()[:-1],
        "connective": connectives[text_field(record, "question", tuple(connectives))],
        "choice1_lc": _lower_first(text_field(record, "choice1")),
        "choice2_lc": _lower_first(text_field(record, "choice2")),
    }


def _hellaswag_fields(record: dict[str, Any], subset: str) -> dict[str, Any]:
    # lm-eval builds ctx_a + " " + ctx_b.capitalize(); the shared file kept ctx_a + " " + ctx_b
    # without the split. ctx_b (ActivityNet items) is the lower-case fragment after the last
    # sentence end, so that fragment is re-derived and capitalised; WikiHow items have none.
    ctx = text_field(record, "ctx")
    cut = ctx.rfind(". ") + 2
    if cut > 1 and ctx[cut : cut + 1].islower():
        ctx = ctx[:cut] + ctx[cut:].capitalize()
    return {"query": f"{text_field(record, 'activity_label')}: {ctx}"}


def _lambada_fields(record: dict[str, Any], subset: str) -> dict[str, Any]:
    # lm_eval/tasks/lambada/lambada_openai.yaml: context = all but the last space-separated
    # word; target = " " + the last word.
    words = text_field(record, "text").split(" ")
    return {"context": " ".join(words[:-1]), "last_word": words[-1]}


XCOPA = register(
    TaskSpec(
        name="xcopa",
        files={lang: f"xcopa/test.{lang}.jsonl" for lang in XCOPA_CONNECTIVES},
        context="{premise_cut} {connective}",
        choices=["{choice1_lc}", "{choice2_lc}"],
        gold="label",
        prepare=lambda r, lang: _copa_fields(r, XCOPA_CONNECTIVES[lang]),
        description="XCOPA (Ponti et al. 2020), 11 languages, test split, lm-eval's prompt",
    )
)

COPA = register(
    TaskSpec(
        name="copa",
        files={"en": "copa/val.jsonl"},
        context="{premise_cut} {connective}",
        # super_glue/copa/utils.py puts a space before each choice and the target delimiter
        # adds another: lm-eval scores "  choice" (two spaces); kept for identical scores.
        choices=[" {choice1_lc}", " {choice2_lc}"],
        gold="label",
        prepare=lambda r, lang: _copa_fields(r, COPA_CONNECTIVES),
        description="COPA (SuperGLUE validation), lm-eval's super_glue/copa prompt",
    )
)

HELLASWAG = register(
    TaskSpec(
        name="hellaswag",
        files={"en": "hellaswag/hellaswag_val.preprocessed.jsonl.gz"},
        # The file already holds lm-eval's preprocess() of ctx and endings.
        context="{query}",
        prepare=_hellaswag_fields,
        choices="endings",
        gold="label",
        description="HellaSwag validation, lm-eval's preprocessed query + ending",
    )
)

LAMBADA = register(
    TaskSpec(
        name="lambada",
        files={"en": "lambada/lambada_test.jsonl"},
        kind="loglikelihood",
        context="{context}",
        target=" {last_word}",
        prepare=_lambada_fields,
        description="LAMBADA (OpenAI detokenized test): last-word accuracy and perplexity",
    )
)

WINOGRANDE = register(
    TaskSpec(
        name="winogrande",
        files={"en": "winogrande/winogrande_dev.llmfoundry.jsonl"},
        context="",
        choices="context_options",  # sentence up to the blank, each option filled in
        target="{continuation}",  # the rest of the sentence, scored after each option
        gold="gold",
        partial=True,
        description="WinoGrande dev (xl), partial scoring as lm-eval's winogrande task",
    )
)
