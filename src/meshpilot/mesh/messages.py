"""pydantic's validation errors reworded for the mesh file: what was expected, what was written
and, for a likely typo, what was probably meant."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from meshpilot.mesh.diagnostics import Issue, Loc, suggest
from meshpilot.mesh.fields import MAPPING_FORM, SHAPE_TAGS
from meshpilot.mesh.schema import MeshSpec

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def pydantic_issue(error: ErrorDetails) -> Issue:
    """An error at its place in the file; `typed` keeps the union tags that name the form used."""
    typed, kind = tuple(error["loc"]), error["type"]
    loc = tuple(item for item in typed if item not in SHAPE_TAGS)
    if kind == "missing":
        return Issue(loc[:-1], f"missing required key '{loc[-1]}'", at_key=True)
    if kind == "extra_forbidden":
        return Issue(loc, _unknown_key(typed), at_key=True)
    if loc and loc[-1] == "[key]":
        return Issue(loc[:-1], error["msg"], at_key=True)
    return Issue(loc, _message(error, typed))


def _unknown_key(typed: Loc) -> str:
    key = str(typed[-1])
    model = _type_at(typed[:-1])
    known = [f.alias or n for n, f in model.model_fields.items()] if _is_model(model) else []
    close = suggest(key, known)
    if close:
        return f"unknown key '{key}'; did you mean '{close}'?"
    return f"unknown key '{key}'; expected one of: {', '.join(known)}"


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {describe(value)}"
        if kind == "string_type" and isinstance(value, int | float):
            message += "; put it in quotes if it is meant as text"
        return message
    if kind == "literal_error":
        return _not_allowed(value, [str(c) for c in get_args(_type_at(loc))])
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']} or more, got {describe(value)}"
    if kind == "less_than_equal":
        return f"must be {ctx['le']} or less, got {describe(value)}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    return error["msg"]


def _not_allowed(value: object, choices: list[str]) -> str:
    close = suggest(value, choices) if isinstance(value, str) else None
    if close:
        return f"unknown value '{value}'; did you mean '{close}'?"
    return f"expected one of {', '.join(choices)}; got {describe(value)}"


def describe(value: object) -> str:
    """A value as the user wrote it, short enough for one line."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}" if value.bit_length() < 128 else "a very large integer"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value if len(value) <= 40 else value[:37] + '...'!r}"
    names: dict[type, str] = {list: "a list", dict: "a mapping", bytes: "binary data"}
    return names.get(type(value), f"a {type(value).__name__}")


def _type_at(loc: Loc) -> Any:
    """The schema type at `loc`, to name the keys or values that would have been accepted."""
    current: Any = MeshSpec
    for item in loc:
        current = _unwrap(current)
        if item in SHAPE_TAGS:
            current = _form(current, item)
        elif _is_model(current):
            field = current.model_fields.get(str(item))
            current = field.annotation if field else None
        elif get_origin(current) is dict:
            current = get_args(current)[0 if item == "[key]" else 1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _form(union: Any, tag: object) -> Any:
    """The member of a shorthand-or-mapping union that `tag` names."""
    members = [_unwrap(m) for m in get_args(union)]
    models = [m for m in members if _is_model(m)]
    others = [m for m in members if not _is_model(m)]
    chosen = models if tag == MAPPING_FORM else others
    return chosen[0] if chosen else None


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `| None`, which do not change what a value may be."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            kinds = [a for a in get_args(annotation) if a is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
