"""One typed validator for the files people write, and their JSON Schema, from dataclasses.

A file's format is a dataclass (fields with type hints and defaults); ``build`` checks a
mapping against it and returns the instance, appending every problem it finds to
``problems`` as ``<where><field>: <what>`` (all at once, never the first only), and
``json_schema`` gives the same format as a JSON Schema for editors
(``# yaml-language-server: $schema=...``).

Why not pydantic: its messages ("Input should be a valid integer") name neither the value
nor the spelling of the type the spec's docs use, it coerces ``"3"`` to 3 unless strict, and
strict mode refuses a mapping for a dataclass; this is the small typed validator the
project's specs need (the types they use: bool, int, float, str, lists, mappings, optional
values, nested sections), and nothing else.

Field metadata understood: ``runtime`` (set by the loader, never by a file), ``choices``
(the allowed values, for the schema's ``enum``; checked by the file's value checks, which
say more), ``description``. A section class may define ``normalize(data, where,
problems) -> dict | None``: it sees the raw mapping first (defaults that depend on what was
given, a message of its own); None means it reported the section and it is skipped.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import lru_cache
from typing import Any, Union

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


@lru_cache(maxsize=None)
def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields."""
    return typing.get_type_hints(cls)


def is_number(value: Any, finite: bool = False) -> bool:
    """Whether ``value`` is a real number (an int or a float, never a bool), and with
    ``finite`` not NaN or infinite: the one rule for "a number" in files, params and records."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return ok and (not finite or math.isfinite(value))


def is_positive_int(value: Any) -> bool:
    """Whether ``value`` is an int (never a bool) above zero."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _args(tp: Any) -> tuple:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def type_name(tp: Any) -> str:
    """A type as the docs write it: ``int``, ``int | None``, ``list[str]``, ``dict[str, str]``."""
    if tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    if _is_union(tp):
        return " | ".join(type_name(a) for a in _args(tp))
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in _args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _check(value: Any, tp: Any, where: str, problems: list[str]) -> tuple[bool, Any]:
    """Whether ``value`` has type ``tp`` (nested sections built, ints widened to float);
    a nested section reports its own problems and counts as checked."""
    if tp is Any:
        return True, value
    if _is_union(tp):
        if value is None and type(None) in _args(tp):
            return True, None
        for arg in _args(tp):
            if arg is type(None):
                continue
            if dataclasses.is_dataclass(arg):
                return True, build(arg, value, where, problems)
            ok, out = _check(value, arg, where, [])
            if ok:
                return True, out
        return False, value
    if dataclasses.is_dataclass(tp):
        return True, build(tp, value, where, problems)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = is_number(value)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item,) = _args(tp)
        out = []
        for i, v in enumerate(value):
            ok, v = _check(v, item, f"{where}[{i}]", problems)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        _, item = _args(tp)
        out = {}
        for k, v in value.items():
            ok, v = _check(v, item, f"{where}.{k}", problems)
            if not ok:
                return False, value
            out[k] = v
        return True, out
    return isinstance(value, tp), value


def build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """``cls`` built from the mapping ``data``, or None when it has problems (appended to
    ``problems``, each named ``<where>.<field>``). Unknown keys, missing required fields and
    values of the wrong type are problems; a float field takes an int."""
    prefix = f"{where}." if where else ""
    if not isinstance(data, dict):
        names = ", ".join(f.name for f in _fields(cls))
        problems.append(f"{where}: expected a mapping ({names}), got {type(data).__name__} {data!r}")
        return None
    normalize = getattr(cls, "normalize", None)
    if normalize is not None:
        data = normalize(dict(data), prefix, problems)
        if data is None:
            return None
    before = len(problems)
    fields = {f.name: f for f in _fields(cls)}
    known = [n for n, f in fields.items() if not f.metadata.get("runtime")]
    out: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            problems.append(f"{prefix}{key}: unknown field; expected one of {sorted(known)}")
        elif f.metadata.get("runtime"):
            problems.append(f"{prefix}{key}: unknown field (set by the loader, not by a spec file)")
        else:
            ok, checked = _check(value, hints(cls)[key], f"{prefix}{key}", problems)
            if ok:
                out[key] = checked
            else:
                problems.append(f"{prefix}{key}: expected {type_name(hints(cls)[key])}, "
                                f"got {type(value).__name__} {value!r}")
    for name in known:
        f = fields[name]
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(f"{prefix}{name}: missing required field")
    if len(problems) > before:
        return None
    return cls(**out)


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


def json_schema(cls: type, title: str | None = None, choices: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a file whose format is the dataclass ``cls``.
    ``choices``: allowed values by ``"Class.field"``, beside those in the fields' metadata
    (values known only above this module: task types, prompt formats, precisions)."""
    defs: dict[str, Any] = {}
    root = _object_schema(cls, defs, choices or {})
    out: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    out["title"] = title or cls.__name__
    out.update(root)
    if defs:
        out["$defs"] = defs
    return out


def _object_schema(cls: type, defs: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required = []
    for f in _fields(cls):
        if f.metadata.get("runtime"):
            continue
        prop = _type_schema(hints(cls)[f.name], defs, choices)
        allowed = choices.get(f"{cls.__name__}.{f.name}") or f.metadata.get("choices")
        if allowed:
            _set_enum(prop, list(allowed))
        if f.metadata.get("description"):
            prop["description"] = f.metadata["description"]
        if f.default is not dataclasses.MISSING and _jsonable(f.default):
            prop["default"] = f.default
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        props[f.name] = prop
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if doc:
        schema["description"] = " ".join(doc.split())
    if required:
        schema["required"] = required
    return schema


def _set_enum(prop: dict[str, Any], allowed: list) -> None:
    """Put the allowed values on the string the property holds (itself, a list's items, or
    the non-null branch of an optional value)."""
    if prop.get("type") == "array":
        _set_enum(prop["items"], allowed)
    elif "anyOf" in prop:
        for branch in prop["anyOf"]:
            if branch.get("type") != "null":
                _set_enum(branch, allowed)
    else:
        prop["enum"] = allowed


def _type_schema(tp: Any, defs: dict[str, Any], choices: dict[str, Any]) -> dict[str, Any]:
    if tp is Any:
        return {}
    if tp is type(None):
        return {"type": "null"}
    if _is_union(tp):
        return {"anyOf": [_type_schema(a, defs, choices) for a in _args(tp)]}
    if dataclasses.is_dataclass(tp):
        if tp.__name__ not in defs:
            defs[tp.__name__] = {}  # placed first: a section that refers to itself
            defs[tp.__name__] = _object_schema(tp, defs, choices)
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    origin = typing.get_origin(tp)
    if origin is list:
        return {"type": "array", "items": _type_schema(_args(tp)[0], defs, choices)}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(_args(tp)[1], defs, choices)}
    raise TypeError(f"no JSON Schema for the type {tp!r}")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
