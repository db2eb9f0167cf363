"""Zero-shot tasks read from local files: one declarative `TaskSpec` per task, and a registry.

In: a task name (builtin or from a YAML file) and the data folder. Out: `Example`s per subset
(language): the (context, continuation) strings to score, the choice strings lm-eval measures for
acc_norm, and the gold index. A task names its files, the record fields and a template; templates
are Python format strings over the record's fields (`"{premise} {connective}"`), after an
optional `prepare(record, subset)` that derives fields (builtin tasks only).

The builtin templates are lm-eval 0.4's (`lm_eval/tasks/{xcopa,super_glue/copa,hellaswag,lambada,
winogrande}`): zero-shot, target delimiter " " between context and choice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bloomforge.errors import BloomforgeError

Kind = Literal["multiple_choice", "loglikelihood", "generate"]


@dataclass(frozen=True)
class Example:
    contexts: list[str]  # one per choice (the same string repeated unless partial scoring)
    continuations: list[str]  # one per choice, target delimiter included
    choices: list[str]  # lm-eval's doc_to_choice strings (lengths for acc_norm)
    gold: int


@dataclass(frozen=True)
class TaskSpec:
    """A task: where its records are, how a record becomes the strings to score."""

    name: str
    files: dict[str, str]  # subset (a language, or "all") -> file under the data folder
    # loglikelihood: one continuation, scored by acc (greedy) + perplexity; generate: greedy
    # generation cut at `until`, scored by exact match with the target
    kind: Kind = "multiple_choice"
    context: str = ""  # template of the context
    choices: str | list[str] | None = None  # a list field's name, or one template per choice
    target: str | None = None  # continuation template (loglikelihood; partial scoring)
    gold: str = "label"  # field holding the gold choice index
    partial: bool = False  # WinoGrande: the choices complete the context, the target is shared
    delimiter: str = " "  # lm-eval's target_delimiter
    until: tuple[str, ...] = ("\n\n",)  # generate: stop strings (lm-eval's default)
    max_new_tokens: int = 256  # generate: lm-eval's default max_gen_toks
    prepare: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    description: str = ""
    metrics: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind == "multiple_choice" and self.choices is None:
            raise BloomforgeError(f"task {self.name}: a multiple_choice task needs 'choices'")
        if (self.kind != "multiple_choice" or self.partial) and self.target is None:
            raise BloomforgeError(f"task {self.name}: needs a 'target' template")
        if not self.metrics:
            default = {
                "loglikelihood": ("acc", "perplexity"),
                "generate": ("exact_match",),
                "multiple_choice": ("acc",) if self.partial else ("acc", "acc_norm"),
            }[self.kind]
            object.__setattr__(self, "metrics", default)

    def example(self, record: dict[str, Any], subset: str, where: str) -> Example:
        fields = dict(record)
        if self.prepare is not None:
            try:
                fields.update(self.prepare(record, subset))
            except RecordError as e:
                raise BloomforgeError(f"{where}: {e}") from e
        ctx = _render(self.context, fields, where)
        if self.kind != "multiple_choice":
            target = _render(self.target or "", fields, where)
            return Example([ctx], [target], [target], 0)
        if isinstance(self.choices, str) and "{" not in self.choices:
            options = fields.get(self.choices)
            if not isinstance(options, list) or not all(isinstance(c, str) for c in options):
                raise BloomforgeError(f"{where}: field '{self.choices}' is not a list of strings")
            choices = list(options)
        else:
            templates = [self.choices] if isinstance(self.choices, str) else list(self.choices)
            choices = [_render(t, fields, where) for t in templates]
        gold = fields.get(self.gold)
        if isinstance(gold, str) and gold.strip().isdigit():
            gold = int(gold)
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise BloomforgeError(f"{where}: '{self.gold}'={gold!r} is not a choice index")
        if self.partial:
            target = self.delimiter + _render(self.target or "", fields, where)
            return Example([ctx + c for c in choices], [target] * len(choices), choices, gold)
        conts = [self.delimiter + c for c in choices]
        return Example([ctx] * len(choices), conts, choices, gold)

    def read(self, data_dir: Path, limit: int | None = None) -> dict[str, list[Example]]:
        """Examples per subset: the first `limit` records of each file, in file order."""
        out = {}
        for subset, name in self.files.items():
            path = data_dir / name
            out[subset] = [self.example(rec, subset, where) for rec, where in _records(path, limit)]
        return out


class RecordError(ValueError):
    """A record lacks a field a builtin task's `prepare` reads, or holds the wrong value; the
    task adds the file and line, as for a template field of a custom task."""


def text_field(record: dict[str, Any], name: str, choices: Sequence[str] = ()) -> str:
    """`record[name]` as a string (one of `choices` if given), else a RecordError naming it."""
    if name not in record:
        raise RecordError(f"record has no field '{name}'")
    value = record[name]
    if not isinstance(value, str):
        raise RecordError(f"field '{name}' is {type(value).__name__}, expected a string")
    if choices and value not in choices:
        raise RecordError(f"field '{name}' is {value!r}, expected one of {', '.join(choices)}")
    return value


def _render(template: str, fields: dict[str, Any], where: str) -> str:
    try:
        return template.format_map(fields)
    except KeyError as e:
        raise BloomforgeError(f"{where}: record has no field {e} used by the template") from e


def read_records(path: Path, limit: int | None = None) -> Iterator[tuple[dict[str, Any], str]]:
    """A task file's JSON records (the first `limit`), each with its `file:line`."""
    return _records(path, limit)


def _records(path: Path, limit: int | None) -> Iterator[tuple[dict[str, Any], str]]:
    from bloomforge.documents.inputs import open_binary

    if not path.is_file():
        raise BloomforgeError(f"{path}: task file not found (check --data)")
    n = 0
    with open_binary(path) as f:
        for lineno, line in enumerate(f, start=1):
            if limit is not None and n >= limit:
                return
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BloomforgeError(f"{where}: not valid JSON ({e})") from e
            if not isinstance(record, dict):
                raise BloomforgeError(f"{where}: a record must be a JSON object")
            n += 1
            yield record, where


# --- registry ---------------------------------------------------------------------------
_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    from bloomforge.evaluation import builtin_tasks  # noqa: F401  (registers the builtins)

    if name not in _REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"did you mean '{near[0]}'?" if near else "known: " + ", ".join(sorted(_REGISTRY))
        raise BloomforgeError(f"unknown task '{name}' ({hint})")
    return _REGISTRY[name]


_YAML_KEYS = {
    "name", "files", "kind", "context", "choices", "target", "gold", "partial", "delimiter",
    "description", "metrics", "until", "max_new_tokens",
}  # fmt: skip


def load_task_file(path: str | Path) -> TaskSpec:
    """A task from a YAML file (keys as TaskSpec's, without `prepare`); registered by name."""
    from bloomforge.typed_config import load_yaml

    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise BloomforgeError(f"{path}: a task file is a YAML mapping")
    for key in data:
        if key not in _YAML_KEYS:
            import difflib

            near = difflib.get_close_matches(str(key), _YAML_KEYS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise BloomforgeError(f"{path}: unknown key '{key}'{hint}")
    for key in ("name", "files"):
        if key not in data:
            raise BloomforgeError(f"{path}: missing key '{key}'")
    files = data["files"]
    if isinstance(files, str):
        files = {"all": files}
    for key in ("metrics", "until"):
        if key in data:
            value = data[key]
            data[key] = (value,) if isinstance(value, str) else tuple(value)
    return register(TaskSpec(**{**data, "files": {str(k): str(v) for k, v in files.items()}}))
