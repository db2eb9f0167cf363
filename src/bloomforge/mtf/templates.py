"""Prompt templates in promptsource's format, loaded safely and rendered as promptsource does.

In: `templates.yaml` files (promptsource's layout: `dataset`, optional `subset`, `templates:` a
map of id -> `!Template` with `jinja`, `answer_choices`, `name`, `!TemplateMetadata`). Out:
`Template` objects whose `apply(example)` returns the rendered parts, split on `|||` and stripped,
exactly like promptsource's `Template.apply` (bigscience-workshop/promptsource, templates.py).

Safety: the YAML loader is a `yaml.SafeLoader` that only adds constructors for promptsource's two
tags (they become plain dicts); any other tag, `!!python/...` included, is refused. Jinja runs in
jinja2's `SandboxedEnvironment`, so a template cannot reach Python internals.

One deliberate difference: missing fields are errors (`StrictUndefined`), where promptsource's
lenient default renders them as empty text and would write a prompt with a hole in it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from bloomforge.errors import BloomforgeError

SEPARATOR = "|||"
# promptsource's Template.pipe_protector: a `|||` inside an example's text is hidden while the
# rendered string is split, then put back.
_PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"


class TemplateLoader(yaml.SafeLoader):
    """SafeLoader + promptsource's `!Template` / `!TemplateMetadata` tags, as plain dicts."""


def _as_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"{node.tag} must be a mapping", node.start_mark
        )
    return loader.construct_mapping(node, deep=True)


TemplateLoader.add_constructor("!Template", _as_dict)
TemplateLoader.add_constructor("!TemplateMetadata", _as_dict)


class RenderSkip(Exception):
    """A template that does not apply to one example; the reason is counted, never fatal."""


@jinja2.pass_context
def _choice(context: jinja2.runtime.Context, choices: Any) -> Any:
    """promptsource's `choice` filter (`random.choice`), drawn from the render's seeded RNG."""
    return context[_RNG].choice(list(choices))


_RNG = "_bloomforge_rng"


def _most_frequent(items: list) -> Any:
    """promptsource's `most_frequent` filter: the most common item (first seen on ties)."""
    return Counter(items).most_common(1)[0][0]


def make_environment() -> SandboxedEnvironment:
    """promptsource's Jinja environment (its `choice` and `most_frequent` filters), sandboxed,
    with missing fields as errors."""
    env = SandboxedEnvironment(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined)
    env.filters["choice"] = _choice
    env.filters["most_frequent"] = _most_frequent
    return env


_ENV = make_environment()


@dataclass
class Template:
    id: str
    name: str
    jinja: str
    answer_choices: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""
    subset: str | None = None
    source: str = ""  # the file it came from, for error messages

    def __post_init__(self) -> None:
        where = f"{self.source}: template {self.id}"
        try:
            self._jinja = _ENV.from_string(self.jinja)
            self._choices = (
                None if self.answer_choices is None else _ENV.from_string(self.answer_choices)
            )
        except jinja2.TemplateSyntaxError as e:
            raise BloomforgeError(
                f"{where} ({self.name!r}): bad Jinja (line {e.lineno}: {e.message})"
            ) from e
        if SEPARATOR not in self.jinja:
            raise BloomforgeError(
                f"{where} ({self.name!r}): no '{SEPARATOR}' between input and target"
            )

    def answer_choices_list(self, example: dict[str, Any], rng: random.Random) -> list[str] | None:
        """promptsource's `get_answer_choices_list`: render, split on `|||`, strip each."""
        if self._choices is None:
            return None
        text = self._choices.render(**_escape_pipe(example), **{_RNG: rng})
        return [_unescape(c.strip()) for c in text.split(SEPARATOR)]

    def apply(self, example: dict[str, Any], seed: int = 0) -> list[str]:
        """The rendered parts (input, target, ...), split on `|||` and stripped.

        `seed` drives the `choice` filter (promptsource draws from the global `random`), so a
        build is reproducible. A missing field or a failing expression raises RenderSkip.
        """
        if "answer_choices" in example:
            raise RenderSkip("record has the reserved key 'answer_choices'")
        rng = random.Random(f"{seed}:{self.id}")
        protected = _escape_pipe(example)
        try:
            protected["answer_choices"] = self.answer_choices_list(example, rng)
            protected[_RNG] = rng
            text = self._jinja.render(**protected)
        except jinja2.UndefinedError as e:
            raise RenderSkip(f"missing field ({e.message})") from e
        except (jinja2.TemplateError, TypeError, ValueError, IndexError, KeyError) as e:
            raise RenderSkip(f"render error ({type(e).__name__}: {e})") from e
        return [_unescape(part).strip() for part in text.split(SEPARATOR)]

    def input_target(self, example: dict[str, Any], seed: int = 0) -> tuple[str, str]:
        """(input, target) as xP3 keeps them: exactly two non-empty parts, else RenderSkip."""
        parts = self.apply(example, seed)
        if len(parts) != 2:
            raise RenderSkip(f"rendered to {len(parts)} part(s), not input ||| target")
        if not parts[0] or not parts[1]:
            raise RenderSkip(f"empty {'input' if not parts[0] else 'target'}")
        return parts[0], parts[1]


def _escape_pipe(example: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.replace(SEPARATOR, _PIPE_PROTECTOR) if isinstance(v, str) else v
        for k, v in example.items()
    }


def _unescape(text: str) -> str:
    return text.replace(_PIPE_PROTECTOR, SEPARATOR)


def load_template_file(path: str | Path) -> list[Template]:
    """The templates of one promptsource `templates.yaml`, in file order; bad YAML, an unknown
    tag or a template without `jinja` is a one-line BloomforgeError naming file and id."""
    path = Path(path)
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=TemplateLoader)  # a SafeLoader
    except OSError as e:
        raise BloomforgeError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise BloomforgeError(f"{path}: not a promptsource templates file ({msg})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("templates"), dict):
        raise BloomforgeError(f"{path}: no 'templates:' mapping (promptsource layout expected)")
    dataset = doc.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise BloomforgeError(f"{path}: no 'dataset:' name")
    out = []
    for key, raw in doc["templates"].items():
        if not isinstance(raw, dict):
            raise BloomforgeError(f"{path}: template {key}: not a mapping")
        jinja = raw.get("jinja")
        if not isinstance(jinja, str) or not jinja.strip():
            raise BloomforgeError(f"{path}: template {key}: no 'jinja' text")
        choices = raw.get("answer_choices")
        if choices is not None and not isinstance(choices, str):
            raise BloomforgeError(f"{path}: template {key}: 'answer_choices' must be text")
        out.append(
            Template(
                id=str(raw.get("id", key)),
                name=str(raw.get("name", key)),
                jinja=jinja,
                answer_choices=choices,
                metadata=dict(raw.get("metadata") or {}),
                dataset=dataset,
                subset=doc.get("subset"),
                source=str(path),
            )
        )
    return out


def find_template_files(roots: list[str | Path]) -> list[Path]:
    """Every `templates.yaml` (or a `.yaml` file given directly) under `roots`, sorted."""
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            files.append(root)
        elif root.is_dir():
            files.extend(sorted(root.rglob("templates.yaml")))
        else:
            raise BloomforgeError(f"{root}: no such templates file or folder")
    return files


BUILTIN = Path(__file__).with_name("builtin_templates")


def templates_for(dataset: str, roots: list[str | Path]) -> list[Template]:
    """The templates whose file says `dataset: <dataset>`, from `roots`; when none there, the
    built-in ones shipped with bloomforge (translation prompts for tatoeba)."""
    found = [
        t for f in find_template_files(roots) for t in load_template_file(f) if t.dataset == dataset
    ]
    if not found:
        found = [
            t
            for f in find_template_files([BUILTIN])
            for t in load_template_file(f)
            if t.dataset == dataset
        ]
    return found
