"""Typed, validated configuration for nested dataclasses.

In: YAML files (`load_yaml`, `yaml.safe_load` only), plain mappings, and `a.b.c=value` command-line
overrides (`apply_overrides`). Out: validated dataclass instances (`from_dict`, `load_config`) with
one-line `ConfigError` messages that name the dotted key, and plain dicts / YAML back (`to_dict`,
`save_yaml`, written atomically).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar, Union

import yaml

from bloomforge.errors import BloomforgeError

T = TypeVar("T")
_NONE = type(None)
_KEYED = ("key '", "unknown key '", "missing key '")
_BOOLS = {"true": True, "yes": True, "false": False, "no": False}


class ConfigError(BloomforgeError, ValueError):
    """A configuration problem, described in one line that says which key and what to do: a
    kind of BloomforgeError (the CLI prints it as one line), and a ValueError for callers that
    validate values."""


class _Mismatch(ConfigError):
    """The value at `key` itself has the wrong type (lets unions try their other arms)."""

    def __init__(self, tp: Any, value: Any, key: str) -> None:
        super().__init__(f"key '{key}': expected {_type_name(tp)}, got {_describe(value)}")
        self.key = key


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any"
    if tp is _NONE:
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        names = " or ".join(_type_name(a) for a in args if a is not _NONE)
        return names + " or null" if _NONE in args else names
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"list of {len(args)} ({', '.join(_type_name(a) for a in args)})"
    if origin in (list, tuple) or tp in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    kind = "list" if isinstance(value, list | tuple) else type(value).__name__
    kind = "mapping" if isinstance(value, Mapping) else kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against annotation `tp`, applying the safe coercions; `key` is the path."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and _NONE in args:
            return None
        arms = sorted((a for a in args if a is not _NONE), key=lambda a: type(value) is not a)
        for arm in arms:
            try:
                return _convert(arm, value, key)
            except _Mismatch as e:
                if e.key != key:  # a nested element is wrong: that message is the useful one
                    raise
        raise _Mismatch(tp, value, key)
    if origin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise _Mismatch(tp, value, key)
    if tp is bool and isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]  # int is never a bool
    if tp in (int, float):
        return _number(tp, value, key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _Mismatch(tp, value, key)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch(tp, value, key)
            pairs = enumerate(zip(args, value, strict=True))
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch(tp, value, key)
        ktp, vtp = args if args else (Any, Any)
        return {
            _convert(ktp, k, f"{key}.{k}"): _convert(vtp, v, f"{key}.{k}") for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and callable(getattr(tp, "resolve_input", None)):
            return from_dict(tp, {"preset": value}, key)
        if value is None or isinstance(value, Mapping):  # None: a YAML section left empty
            return from_dict(tp, value, key)
        raise _Mismatch(tp, value, key)
    if tp is Path and isinstance(value, str):
        return Path(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _Mismatch(tp, value, key)


def _number(tp: type, value: Any, key: str) -> int | float:
    number = value
    if isinstance(value, str):  # PyYAML reads `3e-4` (no dot) as a string
        with suppress(ValueError):
            return tp(value.strip())
        try:
            number = float(value.strip())  # "2e6" for an int field
        except ValueError:
            raise _Mismatch(tp, value, key) from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _Mismatch(tp, value, key)
    if tp is float:
        return float(number)
    if isinstance(number, float) and not number.is_integer():
        raise _Mismatch(tp, value, key)
    return int(number)


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field whose numeric value (when not None) must lie in a range, declared next
    to the field and checked by `from_dict` at load time. Numbers must also be finite."""
    return dataclasses.field(default=default, metadata={"bounds": (ge, gt, le, lt)})


def _check_bounds(value: Any, bounds: tuple, key: str) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"key '{key}': must be a finite number, got {value}")
    ge, gt, le, lt = bounds
    tests = (
        (ge, ">=", value >= ge if ge is not None else True),
        (gt, ">", value > gt if gt is not None else True),
        (le, "<=", value <= le if le is not None else True),
        (lt, "<", value < lt if lt is not None else True),
    )
    if not all(ok for _, _, ok in tests):
        allowed = " and ".join(f"{op} {b:g}" for b, op, _ in tests if b is not None)
        raise ConfigError(f"key '{key}': must be {allowed}, got {value:g}")


def _reraise(exc: ValueError, prefix: str) -> NoReturn:
    """Re-raise an error from user code (`resolve_input`, `__post_init__`) with the section path."""
    msg = str(exc)
    if isinstance(exc, ConfigError) and (not prefix or msg.startswith((*_KEYED, f"{prefix}:"))):
        raise exc
    if prefix and msg.startswith("key '") and not isinstance(exc, ConfigError):
        raise ConfigError(f"key '{prefix}.{msg[5:]}") from exc
    raise ConfigError(f"{prefix}: {msg}" if prefix else msg) from exc


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build `cls` (a dataclass) from `data`; `prefix` is the dotted path used in messages."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"from_dict needs a dataclass type, got {cls!r}")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        where = f"key '{prefix}'" if prefix else "config"
        raise ConfigError(f"{where}: expected mapping, got {_describe(data)}")
    raw: Mapping[Any, Any] = dict(data)
    resolve = getattr(cls, "resolve_input", None)
    if callable(resolve):
        try:
            raw = resolve(dict(raw))
        except ValueError as e:
            _reraise(e, prefix)
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    valid = [f.name for f in fields]
    renamed: Mapping[str, str] = getattr(cls, "RENAMED", {})
    for key in raw:
        if key in renamed and key not in valid:
            path = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"key '{path}' was renamed: {renamed[key]}")
        if key not in valid:
            path = f"{prefix}.{key}" if prefix else str(key)
            near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            if near:
                hint = f"did you mean '{prefix + '.' if prefix else ''}{near[0]}'?"
            else:
                hint = f"valid keys: {', '.join(valid) or 'none'}"
            raise ConfigError(f"unknown key '{path}' ({hint})")
    kwargs: dict[str, Any] = {}
    for f in fields:
        path = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _convert(hints[f.name], raw[f.name], path)
            if "bounds" in f.metadata:
                _check_bounds(kwargs[f.name], f.metadata["bounds"], path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key '{path}'")
    try:
        return cls(**kwargs)
    except ValueError as e:
        _reraise(e, prefix)


def to_dict(obj: Any) -> Any:
    """Dataclass (or container of them) -> plain dicts, lists and scalars for YAML / JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_dict(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _split(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or "" in key.split("."):
        raise ConfigError(f"override '{item}': expected key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return key, text
    if value is None and text.strip() not in ("", "~", "null", "Null", "NULL"):
        return key, text  # e.g. "#tag" parses as a YAML comment; keep what was typed
    return key, value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a.b": 1, "c": "x"}` (values parsed as YAML; later ones win)."""
    return dict(_split(item) for item in overrides)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Deep copy of `data` with each `a.b.c=value` set, in order, creating sections as needed."""
    out = copy.deepcopy(dict(data))
    for item in overrides:
        _set(out, *_split(item), f"override '{item}'")
    return out


def apply_settings(data: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of `data` with each dotted key of `settings` set to its (already typed)
    value, as `apply_overrides` sets parsed `key=value` strings."""
    out = copy.deepcopy(dict(data))
    for key, value in settings.items():
        _set(out, key, copy.deepcopy(value), f"key '{key}'")
    return out


def _set(out: dict[str, Any], key: str, value: Any, label: str) -> None:
    parts = key.split(".")
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif isinstance(child, str):  # `model: bloom-560m` + `model.n_layer=2`
            child = {"preset": child}
        elif isinstance(child, Mapping):
            child = dict(child)
        else:
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{label}: '{where}' is {_describe(child)}, not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with `yaml.safe_load`; an empty file gives `{}`."""
    name = os.fspath(path)
    if Path(path).is_dir():
        raise ConfigError(f"{name}: is a folder, not a YAML file (give a recipe .yaml file)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name}: not a text file ({e.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        where = f"{name} line {mark.line + 1}" if mark is not None else name
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: top level must be a mapping of keys, got {_describe(data)}")
    return data


def save_yaml(obj: Any, path: str | os.PathLike) -> None:
    """Write `to_dict(obj)` as YAML through `bloomforge.files` (temp name, fsync, rename)."""
    from bloomforge import files

    files.write_yaml(path, to_dict(obj))


def load_config(
    cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> T:
    """`load_yaml(path)` (or `{}`), then `apply_overrides`, then `from_dict(cls, ...)`."""
    data = load_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, overrides))
